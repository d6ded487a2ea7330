"""Bad-input sweep (issue "Trust", "What it must show"): hundreds of wrong ids, flags, files
and stores thrown at every CLI command and at the API.

Every case asserts the same contract:

* CLI: the exit code is 2 for a usage error and 1 only for a real failure (a damaged
  store, a failed verify); stderr is exactly one line, ``sisa <command>: error: ...``,
  that names the problem and says what to do; no traceback.
* API: the error is a ``ValueError`` (sisa's ``InputError``, or scikit-learn's own
  parameter/shape errors) or one of sisa's ``StoreError``s; sisa's own messages are one
  line. Never a bare ``TypeError``/``AttributeError`` from deep inside.
* Nothing changes: every file under every store the case touches (and every input file)
  is byte-for-byte and mode-for-mode what it was (an idle store's ``.lock`` is empty by
  design, so it is part of the digest too); a failed ``train`` into a new path leaves no
  directory behind.

Cases are rows of compact tables; each runs on a fresh copy of one of two module-wide
template stores (integer ids and string ids), so the file runs in seconds. A case that
exposes a bug still in sisa is kept, marked ``xfail(strict=True)`` with the bug as reason.
The count and method are recorded in docs/trust.md ("Bad-input sweep").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sisa import IngestOptions, SISAClassifier, SISARegressor, Store
from sisa.errors import InputError, SisaError, StoreError
from sisa.store.format import keys
from sisa.store.write.holdout import split as _split
from tests.helpers import LOCAL, tree_digest
from tests.helpers import run_cli as cli

N_ROWS = 400
STORES = ("S", "T", "R")  # templates: int ids (row numbers), string ids, S before a forget
# words by which a message says what to do; a line with none of them only names a problem
FIX_WORDS = re.compile(
    r"\b(must|pass|use|run|write|check|pick|give|choose|name|drop|impute|restore|rebuild|"
    r"create|make|encode|omit|point|set|chmod|expected|like|keep|fix|remove|delete|convert|"
    r"add|open|take|takes|needs|need|fit in|see|load|try|rename|replace|only|match|build)\b|`"
    # ... or it lists what would be valid instead
    r"|the input has|this store has|trained on|choose from|nothing to (train on|predict)", re.I)


# ---------------------------------------------------------------------------- helpers
def _table(n: int = N_ROWS, **extra) -> dict:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    return {"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2], "y": (X[:, 0] > 0).astype(np.int64),
            **extra}


def _with(cols: dict, col: str, row: int, value, typ=None) -> dict:
    vals = list(np.asarray(cols[col]).tolist())
    vals[row] = value
    return {**cols, col: pa.array(vals, typ)}


def _holdout_rows() -> np.ndarray:
    return _split(N_ROWS, 0.2, 0)[1]


def write_files(d: Path) -> None:
    """The bad (and a few good) input files the cases name as {F}/<name>."""
    d.mkdir()
    base = _table()
    te = _holdout_rows()

    def pqw(name: str, cols: dict) -> None:
        pq.write_table(pa.table(cols), d / name)

    pqw("good.parquet", base)
    pqw("nan_feat.parquet", _with(base, "f0", 5, float("nan")))
    pqw("inf_feat.parquet", _with(base, "f1", 5, float("inf")))
    pqw("ninf_feat.parquet", _with(base, "f1", 5, float("-inf")))
    pqw("null_feat.parquet", _with(base, "f2", 5, None, pa.float64()))
    pqw("null_label.parquet", _with(base, "y", 5, None, pa.int64()))
    pqw("nan_label.parquet", {**base, "y": np.where(np.arange(N_ROWS) == 5, np.nan,
                                                     base["y"].astype(float))})
    pqw("inf_label_reg.parquet", {**base, "y": np.where(np.arange(N_ROWS) == 5, np.inf,
                                                         base["f2"])})
    pqw("dup_ids.parquet", {**base, "uid": pa.array([0, *range(N_ROWS - 1)])})
    pqw("dup_str_ids.parquet", {**base, "uid": pa.array(["0", *map(str, range(N_ROWS - 1))])})
    pqw("float_ids.parquet", {**base, "uid": np.arange(N_ROWS) * 1.0})
    pqw("null_ids.parquet", {**base, "uid": pa.array([None, *range(1, N_ROWS)], pa.int64())})
    pqw("bool_ids.parquet", {**base, "uid": np.arange(N_ROWS) % 2 == 0})
    pqw("one_class.parquet", {**base, "y": np.zeros(N_ROWS, np.int64)})
    pqw("str_label.parquet", {**base, "y": pa.array(["a" if v else "b" for v in base["y"]])})
    pqw("str_feat.parquet", {**base, "f1": pa.array([f"x{i}" for i in range(N_ROWS)])})
    pqw("zero_rows.parquet", {k: v[:0] for k, v in base.items()})
    pqw("one_row.parquet", {k: v[:1] for k, v in base.items()})
    pqw("cont_label.parquet", {**base, "y": base["f2"]})
    pqw("missing_feat.parquet", {k: v for k, v in base.items() if k != "f2"})
    pqw("hold_nan.parquet", _with(base, "f0", int(te[0]), float("nan")))
    pqw("hold_inf.parquet", _with(base, "f2", int(te[2]), float("inf")))
    pqw("hold_null_label.parquet", _with(base, "y", int(te[1]), None, pa.int64()))
    pqw("hold_null_feat.parquet", _with(base, "f1", int(te[3]), None, pa.float64()))
    trained = next(i for i in range(N_ROWS) if i not in set(te.tolist()))
    pqw("hold_dup_ids.parquet", {**base, "uid": pa.array(  # a holdout row takes a trained id
        [trained if i == int(te[0]) else i for i in range(N_ROWS)])})
    rows = "\n".join(f"{i * 0.1},1.0,0.5,{i % 2}" for i in range(N_ROWS))
    (d / "empty.csv").write_bytes(b"")
    (d / "empty.parquet").write_bytes(b"")
    (d / "header_only.csv").write_text("f0,f1,f2,y\n")
    (d / "bad_cell.csv").write_text("f0,f1,f2,y\n" + rows.replace("0.7000000000000001,1.0",
                                                                  "0.7,oops") + "\n")
    (d / "ragged.csv").write_text("f0,f1,f2,y\n" + rows.replace("\n0.9,1.0,0.5,1",
                                                                "\n0.9,1.0,0.5,1,9") + "\n")
    (d / "nan_text.csv").write_text("f0,f1,f2,y\nnan,1.0,0.5,0\n" + rows + "\n")
    (d / "dup_header.csv").write_text("f0,f1,f1,y\n" + rows + "\n")
    (d / "latin1.csv").write_bytes(b"f0,f1,f2,y\n\xe9,1,1,0\n1,1,1,1\n")
    (d / "junk.parquet").write_bytes(bytes(range(256)) * 2)
    (d / "junk.txt").write_text("hello\n")
    (d / "junkdir").mkdir()
    (d / "junkdir" / "a.bin").write_bytes(b"\0\1\2")
    (d / "junkdir" / "b.txt").write_text("x")
    (d / "emptydir").mkdir()
    for name, text in {
        "ids_empty.txt": "", "ids_ws.txt": "  \n\n ", "ids_obj.json": '{"ids": [1]}',
        "ids_str.json": '"5"', "ids_num.json": "5", "ids_float.json": "[5.0]",
        "ids_bool.json": "[true]", "ids_null.json": "[null]", "ids_nested.json": "[[5]]",
        "ids_strs.json": '["5"]', "ids_bad.json": "[5,", "ids_emptyarr.json": "[]",
        "ids_huge.json": "[99999999999999999999]", "ids_007.txt": "5\n007\n",
        "ids_mixed.txt": "5 6 x\n", "ids_unknown.txt": "5\n99999\n", "ids_float.txt": "5.0\n",
        "ids_plus.txt": "+5\n", "ids_arabic.txt": "\u0665\n", "ids_blankline.txt": "u5\n\nu6\n",
        "ids_ints.json": "[5]", "ids_str_unknown.txt": "u5\nnope\n",
    }.items():
        (d / name).write_text(text, encoding="utf-8")
    (d / "ids_latin1.txt").write_bytes(b"\xff\xfe5\n")
    (d / "ids_bom.txt").write_bytes(b"\xef\xbb\xbf5\n")
    for name, raw in ID_SPELLINGS.items():  # issue 22, item 12
        (d / name).write_bytes(raw)


# Ids files of every spelling (issue 22, item 12), as bytes: each is refused in one line
# or read exactly as stored, never split or normalised
ID_SPELLINGS = {
    "ids_surrogate.json": b'["\\ud800"]', "ids_surrogate_pair.json": b'["u5", "\\udc00x"]',
    "ids_cr.txt": b"u5\ru6\r", "ids_cr_int.txt": b"5\r6\r400\r",
    "ids_bom_str.txt": b"\xef\xbb\xbfu5\n", "ids_bom.json": b"\xef\xbb\xbf[5]",
    "ids_nul.txt": b"u5\x00\n", "ids_nul_int.txt": b"5\x00\n", "ids_trailing.txt": b"u5 \n",
    "ids_tab.txt": b"u5\t\n", "ids_nbsp.txt": "u5\u00a0\n".encode(),
    "ids_nfd.txt": "u\u0301\n".encode(), "ids_nfd.json": '["u\u0301"]'.encode(),
    "ids_ls.txt": "u5\u2028u6\n".encode(), "ids_nel.txt": "u5\u0085u6\n".encode(),
    "ids_vt.txt": b"u5\x0bu6\n", "ids_minus0.json": b"[-0]", "ids_5000.json": b"[" + b"9" * 5000
    + b"]", "ids_exp.json": b"[1e400]", "ids_nan.json": b"[NaN]", "ids_negexp.json": b"[5e0]",
    "ids_deep.json": b"[" * 100_000 + b"]" * 100_000, "ids_cesu.txt": b"\xed\xa0\x80\n",
    "ids_overlong.txt": b"\xc0\xaf\n", "ids_empty_mid.txt": b"u5\r\n\r\nu6\r\n",
}


def write_bad_stores(d: Path, template: Path, signed_built: Path) -> None:
    """Paths that are not stores, and stores that are old, corrupt, damaged or foreign."""
    d.mkdir()
    (d / "empty").mkdir()
    (d / "junk").mkdir()
    (d / "junk" / "notes.txt").write_text("the user's own file")
    (d / "afile").write_bytes(b"not a store\n")

    def variant(name: str, fn: Callable[[Path], None]) -> None:
        shutil.copytree(template, d / name)
        fn(d / name)

    def manifest(p: Path) -> Path:
        return p / "manifest.json"

    def old_format(p: Path) -> None:
        m = json.loads(manifest(p).read_text())["manifest"]
        m["format"] = "sisa-store/2"
        m.pop("signer", None)
        m.pop("store_id", None)
        m["audit_key"] = "ab" * 32
        body = json.dumps(m, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(body.encode()).hexdigest()
        manifest(p).write_text('{"checksum":"' + digest + '","manifest":' + body + "}")

    def bad_checksum(p: Path) -> None:
        raw = manifest(p).read_bytes()
        digest = json.loads(raw)["checksum"]
        manifest(p).write_bytes(raw.replace(digest.encode(), b"0" * 64))

    def edited_body(p: Path) -> None:  # a byte of the body changed, checksum kept
        raw = manifest(p).read_bytes()
        edited = re.sub(rb'"generation":(\d+)', lambda m: b'"generation":%d' % (int(m[1]) + 1),
                        raw)
        assert edited != raw
        manifest(p).write_bytes(edited)

    def first(p: Path, sub: str, ext: str) -> Path:
        return sorted((p / sub).rglob(f"*.{ext}"))[0]

    variant("old", old_format)
    variant("badsum", bad_checksum)
    variant("edited", edited_body)
    variant("torn", lambda p: manifest(p).write_bytes(manifest(p).read_bytes()[:200]))
    variant("emptyman", lambda p: manifest(p).write_bytes(b""))
    variant("listman", lambda p: manifest(p).write_text("[]"))
    variant("cutdata", lambda p: first(p, "data", "arrow").write_bytes(
        first(p, "data", "arrow").read_bytes()[:50]))
    variant("nodata", lambda p: first(p, "data", "arrow").unlink())
    variant("noindex", lambda p: first(p, "index", "arrow").unlink())
    variant("nockpt", lambda p: first(p, "checkpoints", "pkl").unlink())
    shutil.copytree(signed_built, d / "signed")


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def keyless(tmp_path_factory) -> Iterator[Path]:
    """No owner key anywhere (no $SISA_KEY, no $SISA_KEY_FILE, an empty $HOME)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for var in (keys.KEY_ENV, keys.KEY_FILE_ENV, "SISA_TRUSTED_MODULES", "SISA_CRASH_AT"):
            mp.delenv(var, raising=False)
        mp.setenv("HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def templates(tmp_path_factory, keyless) -> Path:
    """Template stores S (int ids) and T (string ids "007", "7", "a b", u3..), input files
    F, bad stores K (one signed by a key that is not configured here)."""
    root = tmp_path_factory.mktemp("bad-input")
    write_files(root / "F")
    ids = ["007", "7", "a b"] + [f"u{i}" for i in range(3, N_ROWS)]
    pq.write_table(pa.table(_table(uid=pa.array(ids))), root / "str.parquet")
    common = ["--shards", "2", "--slices", "2", "--backend", "local", "--quiet"]
    for name, argv in (("S", [str(root / "F" / "good.parquet"), "--label", "y"]),
                       ("T", [str(root / "str.parquet"), "--label", "y", "--id", "uid"])):
        code, _, err = cli("train", *argv, "--store", str(root / name), *common)
        assert code == 0, err
    shutil.copytree(root / "S", root / "R")  # no audit log yet: an API refit may replace it
    # one forget on each, so the audit log, tombstones and receipts are there to protect
    assert cli("forget", str(root / "S"), "--id", "9", "--backend", "local", "--quiet")[0] == 0
    assert cli("forget", str(root / "T"), "--id", "u9", "--backend", "local", "--quiet")[0] == 0
    keys.save(keys.generate(), root / "owner.key")
    keys.save(keys.generate(), root / "other.key")
    os.environ[keys.KEY_FILE_ENV] = str(root / "owner.key")
    try:
        code, _, err = cli("train", str(root / "F" / "good.parquet"), "--label", "y",
                           "--store", str(root / "signed"), *common)
    finally:
        del os.environ[keys.KEY_FILE_ENV]
    assert code == 0, err
    write_bad_stores(root / "K", root / "S", root / "signed")
    (root / "other.pub").write_text(keys.load(root / "other.key").public_line + "\n")
    shutil.copytree(root, root.parent / (root.name + "-pristine"), symlinks=True)
    return root


GUARDED = ("S", "T", "R", "F")  # checked after every case, whether it names them or not


@dataclass
class Work:
    """One case's view of the shared templates: the paths it names, and a check that
    none of them changed. Cases run on the templates themselves (no copy per case); a
    case that changes one fails, and the template is restored from its pristine copy."""

    root: Path
    templates: Path
    digests: dict[str, str]
    touched: set[str] = field(default_factory=lambda: set(GUARDED))
    checked: list[str] | None = None  # the last changed() result, if nothing ran since

    def path(self, what: str) -> str:
        """``S``/``T``/``R`` (a store), ``K/<kind>`` (a bad store or a non-store path),
        ``F`` (input files), ``NEW`` (a path that does not exist), ``TMP`` (this case's
        own folder), ``KEYS`` (the folder with owner.key, other.key, other.pub)."""
        if what in STORES or what.startswith("K/") or what == "F":
            self.touched.add(what)
            self.checked = None
            if what not in self.digests:
                self.digests[what] = tree_digest(self.templates / what)
            return str(self.templates / what)
        if what == "NEW":
            return str(self.root / "new-store")
        if what == "KEYS":
            return str(self.templates)
        assert what == "TMP", what
        return str(self.root)

    def copy(self, what: str) -> Path:
        """A private copy of a template, for a case that changes it on purpose."""
        dst = self.root / what.replace("/", "_")
        shutil.copytree(self.templates / what, dst, symlinks=True)
        return dst

    def fill(self, text: str) -> str:
        return re.sub(r"\{(S|T|R|K/\w+|F|NEW|TMP|KEYS)\}", lambda m: self.path(m.group(1)),
                      text)

    def changed(self) -> list[str]:
        self.checked = sorted(w for w in self.touched
                              if tree_digest(self.templates / w) != self.digests[w])
        return self.checked

    def restore(self) -> None:
        pristine = self.templates.parent / (self.templates.name + "-pristine")
        for what in self.changed() if self.checked is None else self.checked:
            dst = self.templates / what
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            elif dst.exists() or dst.is_symlink():
                dst.unlink()
            src = pristine / what
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            elif src.exists():
                shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def template_digests(templates) -> dict[str, str]:
    return {w: tree_digest(templates / w) for w in GUARDED}


@pytest.fixture
def work(templates, template_digests, tmp_path) -> Iterator[Work]:
    w = Work(tmp_path, templates, dict(template_digests))
    yield w
    w.restore()


# ---------------------------------------------------------------------------- CLI cases
@dataclass(frozen=True)
class C:
    """A CLI case: argv (with {S}, {T}, {F}, {K/kind}, {NEW}, {TMP}, {KEYS}), the exit
    code, a regex the error line must match, env to set, stdin, and a known bug."""

    argv: tuple[str, ...] | str
    code: int = 2
    match: str = ""  # on the stderr line; with stdout=True on the FAIL lines of stdout
    env: tuple[tuple[str, str], ...] = ()
    stdin: str | None = None
    bug: str = ""
    stdout: bool = False  # a failed verify: FAIL lines on stdout, exit 1, stderr empty

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):
            object.__setattr__(self, "argv", tuple(shlex.split(self.argv)))


TE = [int(v) for v in _holdout_rows()[:4]]
SPEC = '{"class": "sklearn.linear_model.SGDClassifier", "params": %s}'
TRAIN = "train {F}/good.parquet --label y --backend local --shards 2 --slices 2 "
OVER = "--store {S} --overwrite"

INT_IDS = {  # --id TEXT on an integer store -> the error names the problem
    "007": "write 7", "+7": "write 7", "-0": "write 0", "\u0663": "ASCII digits",
    "\u00b2": "ASCII digits", "7.0": "ASCII digits", "1e3": "ASCII digits", " 7": "write 7",
    "7 ": "write 7", "": "ASCII digits", "99999999999999999999": "out of range",
    "-99999999999999999999": "out of range", "9223372036854775808": "out of range",
    "-9223372036854775809": "out of range", "0x10": "ASCII digits", "0b1": "ASCII digits",
    "7,8": "ASCII digits", "abc": "ASCII digits", "nan": "ASCII digits",
    "inf": "ASCII digits", "True": "ASCII digits", "None": "ASCII digits",
    "\uff17": "ASCII digits", "\u0661\u0662": "ASCII digits", "1_000": "ASCII digits",
    "7\n": "write 7", "\t7": "write 7", "--7": "ASCII digits", "7\u00a0": "ASCII digits",
    "\u00a07": "ASCII digits",
    "99999": "not in store", "-5": "not in store", "400": "not in store",
}
STR_IDS = {  # --id TEXT on a string store: the text is the id, exactly; none of these exist
    "u400": "not in store", "": "not in store", " u5": "not in store", "u5 ": "not in store",
    "U5": "not in store", "\uff55" + "5": "not in store", "07": "not in store",
    "0": "not in store", "-0": "not in store", "a  b": "not in store", "u400 ": "not in store",
}

CLI_CASES: dict[str, C] = {}
for text, msg in INT_IDS.items():
    CLI_CASES[f"forget-int-id-{text!r}"] = C(("forget", "{S}", f"--id={text}"), 2,
                                             re.escape(msg))
for text, msg in STR_IDS.items():
    CLI_CASES[f"forget-str-id-{text!r}"] = C(("forget", "{T}", f"--id={text}"), 2,
                                             re.escape(msg))
CLI_CASES.update({
    "forget-int-good-then-bad": C("forget {S} --id 5 --id 007", 2, "write 7"),
    "forget-int-good-then-unknown": C("forget {S} --id 5 --id 99999", 2, "99999.*nothing was"),
    "forget-str-good-then-unknown": C("forget {T} --id u5 --id nope", 2, "nope"),
    "forget-no-ids": C("forget {S}", 2, "--id X"),
    "forget-str-id-newline": C(("forget", "{T}", "--id", "a b\n"), 2, "not in store.*check"),
    # an argument with a byte that is not UTF-8 reaches Python as a lone surrogate
    "forget-str-id-surrogate": C(("forget", "{T}", "--id", "u5", "--id", "u\udcff"), 2,
                                 r"--id #2 .*lone surrogate"),
    "forget-int-id-surrogate": C(("forget", "{S}", "--id", "\udcff"), 2, "ASCII digits"),
    "forget-str-id-cr": C(("forget", "{T}", "--id", "u5\ru6"), 2, r"'u5\\ru6'"),
    "forget-stdin-lone-cr": C("forget {T} --ids -", 2, r"1 sample id.*'u5\\ru6'",
                              stdin="u5\ru6\r"),
    "forget-stdin-007": C("forget {S} --ids -", 2, "write 7", stdin="007\n"),
    "forget-stdin-empty": C("forget {S} --ids -", 2, "--id X", stdin=""),
    "forget-backend-gpu": C("forget {S} --id 5 --backend gpu", 2, "invalid choice"),
    "forget-unknown-flag": C("forget {S} --id 5 --force", 2, "unrecognized arguments"),
    "forget-signed-keyless": C("forget {K/signed} --id 5", 2, "no key is configured"),
    "forget-signed-other-key": C("forget {K/signed} --id 5", 2, "signed by ed25519:",
                                 env=(("SISA_KEY_FILE", "{KEYS}/other.key"),)),
    "forget-signed-bad-env-key": C("forget {K/signed} --id 5", 2, r"\$SISA_KEY is not",
                                   env=(("SISA_KEY", "garbage"),)),
})
IDS_FILES = {  # --ids FILE: (store, file, message)
    "int-empty": ("S", "ids_empty.txt", "--id X"), "int-blank": ("S", "ids_ws.txt", "--id X"),
    "int-latin1": ("S", "ids_latin1.txt", "UTF-8"), "int-json-object": ("S", "ids_obj.json",
                                                                       "JSON array"),
    "int-json-string": ("S", "ids_str.json", "JSON array"),
    "int-json-number": ("S", "ids_num.json", "JSON array"),
    "int-json-float": ("S", "ids_float.json", "is a float"),
    "int-json-bool": ("S", "ids_bool.json", "is a bool"),
    "int-json-null": ("S", "ids_null.json", "missing"),
    "int-json-nested": ("S", "ids_nested.json", "is a list"),
    "int-json-strings": ("S", "ids_strs.json", r"pass 5 \(an int\)"),
    "int-json-invalid": ("S", "ids_bad.json", "not valid JSON"),
    "int-json-empty": ("S", "ids_emptyarr.json", "--id X"),
    "int-json-huge": ("S", "ids_huge.json", "out of range"),
    "int-007": ("S", "ids_007.txt", "write 7"), "int-mixed": ("S", "ids_mixed.txt", "'x'"),
    "int-unknown": ("S", "ids_unknown.txt", "99999"),
    "int-float": ("S", "ids_float.txt", "ASCII digits"),
    "int-plus": ("S", "ids_plus.txt", "write 5"),
    "int-arabic": ("S", "ids_arabic.txt", "ASCII digits"),
    "int-bom": ("S", "ids_bom.txt", "byte-order mark"),
    "int-missing": ("S", "nope.txt", "No such file"),
    "int-directory": ("S", "junkdir", "directory"),
    "str-empty": ("T", "ids_empty.txt", "--id X"),
    "str-blank-line": ("T", "ids_blankline.txt", "line 2 .* is empty"),
    "str-json-ints": ("T", "ids_ints.json", r"pass '5' \(a str\)"),
    "str-json-null": ("T", "ids_null.json", "missing"),
    "str-json-object": ("T", "ids_obj.json", "JSON array"),
    "str-json-nested": ("T", "ids_nested.json", "is a list"),
    "str-latin1": ("T", "ids_latin1.txt", "UTF-8"),
    "str-unknown": ("T", "ids_str_unknown.txt", "nope"),
    "str-directory": ("T", "emptydir", "directory"),
    # issue 22, item 12: every spelling is refused in one line or read exactly as stored
    "str-json-surrogate": ("T", "ids_surrogate.json", r"#1 .*lone surrogate"),
    "str-json-surrogate-2nd": ("T", "ids_surrogate_pair.json", r"#2 .*lone surrogate"),
    "int-json-surrogate": ("S", "ids_surrogate.json", "is a str"),
    "str-lone-cr": ("T", "ids_cr.txt", r"1 sample id.*'u5\\ru6'"),  # one id, not two
    "int-lone-cr": ("S", "ids_cr_int.txt", "400"),  # \r is whitespace between integers
    "str-bom": ("T", "ids_bom_str.txt", "byte-order mark"),
    "int-json-bom": ("S", "ids_bom.json", "byte-order mark"),
    "str-nul": ("T", "ids_nul.txt", r"'u5\\x00'"), "int-nul": ("S", "ids_nul_int.txt",
                                                        "ASCII digits"),
    "str-trailing-space": ("T", "ids_trailing.txt", "'u5 '"),
    "str-trailing-tab": ("T", "ids_tab.txt", r"'u5\\t'"),
    "str-trailing-nbsp": ("T", "ids_nbsp.txt", r"'u5\\xa0'"),
    "str-nfd": ("T", "ids_nfd.txt", "not in store"), "str-json-nfd": ("T", "ids_nfd.json",
                                                                      "not in store"),
    "str-line-separator": ("T", "ids_ls.txt", r"1 sample id"),  # U+2028 splits no line
    "str-next-line": ("T", "ids_nel.txt", r"1 sample id"),
    "str-vertical-tab": ("T", "ids_vt.txt", r"1 sample id.*'u5\\x0bu6'"),
    "int-json-minus-zero": ("S", "ids_minus0.json", "write 0"),
    "int-json-5000-digits": ("S", "ids_5000.json", "out of range"),
    "int-json-1e400": ("S", "ids_exp.json", "is a float"),
    "int-json-nan": ("S", "ids_nan.json", "is a float"),
    "int-json-5e0": ("S", "ids_negexp.json", "is a float"),
    "int-json-deep": ("S", "ids_deep.json", "not valid JSON"),
    "str-cesu-surrogate": ("T", "ids_cesu.txt", "UTF-8"),
    "str-overlong-utf8": ("T", "ids_overlong.txt", "UTF-8"),
    "str-crlf-empty-line": ("T", "ids_empty_mid.txt", "line 2 .* is empty"),
}
for name, (st, fname, msg) in IDS_FILES.items():
    CLI_CASES[f"ids-file-{name}"] = C(f"forget {{{st}}} --ids {{F}}/{fname}", 2, msg)

CLI_CASES.update({  # verify flags
    "verify-shards-a": C("verify {S} --shards a", 2, "comma-separated integers"),
    "verify-shards-gap": C("verify {S} --shards 1,,0", 2, "comma-separated integers"),
    "verify-shards-float": C("verify {S} --shards 1.0", 2, "comma-separated integers"),
    "verify-shards-99": C("verify {S} --shards 99", 2, "do not exist"),
    "verify-shards-neg": C("verify {S} --shards=-1", 2, "do not exist"),
    "verify-sample-neg": C("verify {S} --sample=-1", 2, "at least 1"),
    "verify-sample-zero": C("verify {S} --sample 0", 2, "at least 1"),
    "verify-sample-x": C("verify {S} --sample x", 2, "invalid int"),
    "verify-public-key-garbage": C("verify {S} --public-key garbage", 2, "not a public key"),
    "verify-public-key-short": C("verify {S} --public-key ed25519:zz", 2, "not a public key"),
    "verify-public-key-missing-file": C("verify {S} --public-key {TMP}/nope.pub", 2,
                                        "not a public key"),
    "verify-public-key-other-owner": C("verify {K/signed} --public-key {KEYS}/other.pub "
                                       "--backend local", 1, "not by the public key",
                                       stdout=True),
    "verify-forgotten-id-007": C("verify {S} --forgotten-id 007", 2, "write 7"),
    "verify-forgotten-id-str-store": C("verify {T} --forgotten-ids {F}/ids_ints.json", 2,
                                       "are strings"),
    "verify-forgotten-ids-missing": C("verify {S} --forgotten-ids {TMP}/nope", 2,
                                      "No such file"),
    "verify-backend-gpu": C("verify {S} --backend gpu", 2, "invalid choice"),
})

TRAIN_FLAGS = {  # train flags, over the existing store S (--overwrite): name -> (flags, msg)
    "shards-0": ("--shards 0", "n_shards must be"), "shards-neg": ("--shards=-1", "n_shards"),
    "shards-huge": ("--shards 1000000000", "use fewer shards"),
    "shards-float": ("--shards 2.5", "invalid int"), "shards-word": ("--shards two",
                                                                     "invalid int"),
    "slices-0": ("--slices 0", "n_slices must be"), "slices-neg": ("--slices=-2", "n_slices"),
    "slices-huge": ("--slices 1000000000", "use fewer shards"),
    "holdout-1": ("--holdout 1", r"\[0, 1\)"), "holdout-neg": ("--holdout=-0.1", r"\[0, 1\)"),
    "holdout-1.5": ("--holdout 1.5", r"\[0, 1\)"), "holdout-nan": ("--holdout nan",
                                                                   r"\[0, 1\)"),
    "holdout-inf": ("--holdout inf", r"\[0, 1\)"),
    "holdout-all": ("--holdout 0.9999", "keeps every one of the"),
    "epochs-0": ("--epochs 0", "--epochs must be at least 1"),
    "epochs-neg": ("--epochs=-3", "--epochs must be at least 1"),
    "model-unknown": ("--model nosuch", "unknown model 'nosuch'"),
    "model-and-spec": ("--model sgd --model-spec {}", "not allowed with"),
    "spec-bad-json": ("--model-spec {bad", "bad --model-spec"),
    "spec-list": ("--model-spec []", "bad --model-spec"),
    "spec-string": ("--model-spec '\"sgd\"'", "bad --model-spec"),
    "spec-no-class": ("--model-spec '{\"params\": {}}'", "bad --model-spec"),
    "spec-params-list": ("--model-spec '" + SPEC % "[1]" + "'", "bad --model-spec"),
    "spec-popen": ("--model-spec '{\"class\": \"subprocess.Popen\", \"params\": {\"args\": "
                   "\"touch /tmp/sisa-pwned\"}}'", "estimator class"),
    "spec-os-system": ("--model-spec '{\"class\": \"os.system\"}'", "estimator class"),
    "spec-builtins-eval": ("--model-spec '{\"class\": \"builtins.eval\"}'", "estimator class"),
    "spec-no-module": ("--model-spec '{\"class\": \"nosuchmodule.X\"}'", "nosuchmodule"),
    "spec-no-such-class": ("--model-spec '{\"class\": \"sklearn.linear_model.NoSuch\"}'",
                           "NoSuch"),
    "spec-transformer": ("--model-spec '{\"class\": \"sklearn.preprocessing.StandardScaler\"}'",
                         "StandardScaler"),
    "features-missing": ("--features f0,nosuch", r"\['nosuch'\] not found"),
    "features-label": ("--features f0,y", "cannot also be features"),
    "label-missing": ("--label nosuch", r"\['nosuch'\] not found"),
    "id-missing": ("--id nosuch", r"\['nosuch'\] not found"),
    "group-missing": ("--group nosuch", r"\['nosuch'\] not found"),
    "dprob-missing": ("--deletion-prob nosuch --hot-shards 1", r"\['nosuch'\] not found"),
    "hot-no-prob": ("--hot-shards 1", "needs deletion probabilities"),
    "hot-neg": ("--hot-shards=-1", "hot_shards must be"),
    "hot-all": ("--hot-shards 2", "hot_shards must be"),
    "dprob-not-prob": ("--deletion-prob f0 --hot-shards 1", r"probability in \[0, 1\]"),
    "hot-threshold": ("--hot-threshold 2", "hot_threshold must be"),
    "seed-neg": ("--seed=-1", "non-negative"),
    "schedule-bad": ("--schedule fast", "invalid choice"),
    "backend-bad": ("--backend gpu", "invalid choice"),
}
for name, (flags, msg) in TRAIN_FLAGS.items():
    CLI_CASES[f"train-flag-{name}"] = C(TRAIN + flags + " " + OVER, 2, msg)
CLI_CASES["train-flag-spec-bad-param"] = C(
    (*shlex.split(TRAIN + OVER), "--model-spec", SPEC % '{"alpha": -1}'), 2, "alpha")
CLI_CASES["train-flag-spec-unknown-param"] = C(
    (*shlex.split(TRAIN + OVER), "--model-spec", SPEC % '{"x": 1}'), 2, "'x'")
CLI_CASES["train-flag-features-duplicate"] = C(
    TRAIN + "--features f0,f0 " + OVER, 2, "f0")
CLI_CASES["train-flag-features-empty"] = C(
    TRAIN + "--features= " + OVER, 2, "--features")
CLI_CASES.update({
    "train-no-label": C("train {F}/good.parquet --store {NEW}", 2, "--label COL is required"),
    "train-exists-no-overwrite": C(TRAIN + "--store {S}", 2, "--overwrite"),
    "train-builtin-rows-0": C("train synthetic --rows 0 --store {S} --overwrite", 2, "n_rows"),
    "train-builtin-rows-neg": C("train synthetic --rows=-5 --store {S} --overwrite", 2,
                                "n_rows"),
    "train-builtin-rows-1": C("train synthetic --rows 1 --store {S} --overwrite", 2,
                              "use fewer shards"),
    "train-builtin-unknown": C("train nosuchdataset --label y --store {NEW}", 2,
                               "does not exist"),
    "train-builtin-regression-classifier": C("train diamonds --rows 50 --model tree --store "
                                             "{NEW}", 2, "regression dataset"),
    "train-store-is-file": C(TRAIN + "--store {K/afile}", 2, "is a file"),
    "train-store-is-foreign-dir": C(TRAIN + "--store {K/junk}", 2, "not empty"),
    "train-store-inside-store": C(TRAIN + "--store {S}/data", 2, ""),
    "train-regressor-string-label": C("train {F}/str_label.parquet --label y --model ridge "
                                      "--shards 2 --slices 2 --backend local " + OVER, 2,
                                      "regressor needs numeric labels"),
    "train-regressor-inf-label": C("train {F}/inf_label_reg.parquet --label y --model ridge "
                                   "--shards 2 --slices 2 --backend local " + OVER, 2, "inf"),
    "train-classifier-continuous": C("train {F}/cont_label.parquet --label y --shards 2 "
                                     "--slices 2 --backend local " + OVER, 2,
                                     "non-integer values"),
    "train-classifier-one-class": C("train {F}/one_class.parquet --label y --shards 2 "
                                    "--slices 2 --backend local " + OVER, 2, "only 1 class"),
})

DATA_FILES = {  # train DATA -> (file, extra flags, message, bug)
    "missing": ("nosuch.parquet", "", "does not exist", ""),
    "empty-csv": ("empty.csv", "", "empty", ""),
    "empty-parquet": ("empty.parquet", "", "empty", ""),
    "junk-parquet": ("junk.parquet", "", "cannot read", ""),
    "ragged-csv": ("ragged.csv", "", "row", ""),
    "junk-dir": ("junkdir", "", "cannot tell the format", ""),
    "empty-dir": ("emptydir", "", "cannot tell the format", ""),
    "txt": ("junk.txt", "", "cannot tell the format", ""),
    "latin1-csv": ("latin1.csv", "", "not UTF-8 text", ""),
    "bad-cell-csv": ("bad_cell.csv", "", r"\['f1'\] are categories.*--na-values", ""),
    "header-only-csv": ("header_only.csv", "", "", ""),
    # was Arrow's wrapping cut at 200 characters: "... Invalid: CSV file contained mult"
    "dup-header-csv": ("dup_header.csv", "", "CSV file contained multiple columns named f1\\)",
                       ""),
    "zero-rows": ("zero_rows.parquet", "", "no rows", ""),
    "one-row": ("one_row.parquet", "", "use fewer shards", ""),
    "nan-feature": ("nan_feat.parquet", "", r"NaN or inf.*row 5.*\['f0'\]", ""),
    "nan-text-csv": ("nan_text.csv", "", "'f0'.*row 0", ""),
    "inf-feature": ("inf_feat.parquet", "", r"row 5.*\['f1'\]", ""),
    "ninf-feature": ("ninf_feat.parquet", "", r"row 5.*\['f1'\]", ""),
    "null-feature": ("null_feat.parquet", "", "'f2'.*row 5", ""),
    "null-label": ("null_label.parquet", "", "'y' has 1 missing.*row 5", ""),
    "nan-label": ("nan_label.parquet", "", "NaN/inf labels", ""),
    "string-feature": ("str_feat.parquet", "", r"\['f1'\] are categories.*OneHotEncoder", ""),
    "dup-ids": ("dup_ids.parquet", "--id uid", "duplicate sample id", ""),
    "dup-str-ids": ("dup_str_ids.parquet", "--id uid", "duplicate sample id", ""),
    "float-ids": ("float_ids.parquet", "--id uid", "holds double values", ""),
    "null-ids": ("null_ids.parquet", "--id uid", "missing values", ""),
    "bool-ids": ("bool_ids.parquet", "--id uid", "holds bool values", ""),
    "holdout-nan": ("hold_nan.parquet", "--holdout 0.2", f"row {TE[0]}\\b", ""),
    "holdout-inf": ("hold_inf.parquet", "--holdout 0.2", f"row {TE[2]}\\b", ""),
    "holdout-null-label": ("hold_null_label.parquet", "--holdout 0.2", f"'y'.*row {TE[1]}\\b", ""),
    "holdout-null-feature": ("hold_null_feat.parquet", "--holdout 0.2", f"row {TE[3]}\\b", ""),
    "holdout-dup-ids": ("hold_dup_ids.parquet", "--id uid --holdout 0.2", "duplicate", ""),
    "feature-missing-vs-flag": ("missing_feat.parquet", "--features f0,f1,f2", "'f2'", ""),
    # one column for two roles (was rc 1: 'Field "y" exists 2 times in schema')
    "id-is-label": ("good.parquet", "--id y", r"\['y'\] are given for two roles", ""),
    "group-is-label": ("good.parquet", "--group y", "two roles", ""),
    "group-is-id": ("dup_str_ids.parquet", "--id uid --group uid", r"\['uid'\].*two roles", ""),
}
for name, (fname, extra, msg, bug) in DATA_FILES.items():
    argv = f"train {{F}}/{fname} --label y {extra} --shards 2 --slices 2 --backend local "
    # over the existing store (its files must survive) and into a new path (none created)
    CLI_CASES[f"train-data-{name}-overwrite"] = C(argv + OVER, 2, msg, bug=bug)
    CLI_CASES[f"train-data-{name}-new"] = C(argv + "--store {NEW}", 2, msg, bug=bug)
CLI_CASES.update({
    "train-data-is-the-store": C("train {S} --label y --store {S} --overwrite", 2,
                                 "is a sisa store"),
    "train-data-is-another-store": C("train {T} --label y --store {S} --overwrite", 2,
                                     "is a sisa store"),
    "train-data-is-a-store-subdir": C(
        "train {S}/data --label y --store {NEW}", 2, "sisa store"),
})

OUT = "{TMP}/pred.parquet"
CLI_CASES.update({  # predict
    "predict-string-column": C(f"predict {{S}} {{F}}/str_feat.parquet --out {OUT}", 2,
                               "not numeric"),
    "predict-out-missing-folder": C("predict {S} {F}/good.parquet --out {TMP}/no/p.parquet", 2,
                                    "does not exist"),
    "predict-out-in-store": C("predict {S} {F}/good.parquet --out {S}/p.parquet", 2,
                              "inside the sisa store"),
    "predict-out-deep-in-store": C("predict {S} {F}/good.parquet --out {S}/data/p.parquet", 2,
                                   "inside the sisa store"),
    "predict-out-in-other-store": C("predict {S} {F}/good.parquet --out {T}/p.csv", 2,
                                    "inside the sisa store"),
    "predict-out-is-folder": C("predict {S} {F}/good.parquet --out {TMP}", 2, "is a folder"),
    "predict-data-missing": C(f"predict {{S}} {{F}}/nosuch.parquet --out {OUT}", 2,
                              "does not exist"),
    "predict-data-is-store": C(f"predict {{S}} {{S}} --out {OUT}", 2, "is a sisa store"),
    "predict-data-junk-dir": C(f"predict {{S}} {{F}}/junkdir --out {OUT}", 2,
                               "cannot tell the format"),
    "predict-data-nan": C(f"predict {{S}} {{F}}/nan_feat.parquet --out {OUT}", 2, "NaN"),
    "predict-data-null": C(f"predict {{S}} {{F}}/null_feat.parquet --out {OUT}", 2, "NaN"),
    "predict-data-missing-column": C(f"predict {{S}} {{F}}/missing_feat.parquet --out {OUT}",
                                     2, "lacks feature column"),
    "predict-data-header-only": C(f"predict {{S}} {{F}}/header_only.csv --out {OUT}", 2, ""),
    "predict-data-bad-cell": C(f"predict {{S}} {{F}}/bad_cell.csv --out {OUT}", 2,
                               "not numeric"),
    "predict-data-empty-csv": C(f"predict {{S}} {{F}}/empty.csv --out {OUT}", 2, "empty"),
    "predict-data-junk-parquet": C(f"predict {{S}} {{F}}/junk.parquet --out {OUT}", 2,
                                   "cannot read"),
    "predict-data-zero-rows": C(f"predict {{S}} {{F}}/zero_rows.parquet --out {OUT}", 2,
                                "no rows"),
    "predict-no-out": C("predict {S} {F}/good.parquet", 2, "--out"),
})

STORE_KINDS = {  # not a store (usage: 2) / a store sisa cannot use (failure: 1)
    "K/nosuch": (2, "no sisa store", ""),
    "K/afile": (2, "no sisa store", ""),
    "K/empty": (2, "no sisa store", ""),
    "K/junk": (2, "no sisa store", ""),
    "K/old": (1, "sisa-store/2.*rebuild", ""),
    "K/badsum": (1, "corrupt.*restore", ""),
    "K/edited": (1, "corrupt.*restore", ""),
    "K/torn": (1, "corrupt.*restore", ""),
    "K/emptyman": (1, "corrupt.*restore", ""),
    "K/listman": (1, "corrupt.*restore", ""),
}
STORE_COMMANDS = {"status": "status {X}", "history": "history {X}", "verify": "verify {X}",
                  "repair": "repair {X} --backend local",
                  "forget": "forget {X} --id 5 --backend local",
                  "predict": "predict {X} {F}/good.parquet --out {TMP}/p.parquet"}
for kind, (code, msg, bug) in STORE_KINDS.items():
    for cmd, tmpl in STORE_COMMANDS.items():
        CLI_CASES[f"store-{kind[2:]}-{cmd}"] = C(tmpl.replace("{X}", "{" + kind + "}"), code, msg,
                                                 bug=bug)
DAMAGED = {  # a file of a real store missing or cut: every command that needs it fails (1)
    "cutdata": ("status", "forget", "predict", "verify", "repair"),
    "nodata": ("status", "forget", "predict", "verify", "repair"),
    "noindex": ("status", "forget", "verify", "repair"),
    "nockpt": ("status", "forget", "predict"),
}
for kind, cmds in DAMAGED.items():
    for cmd in cmds:
        CLI_CASES[f"store-{kind}-{cmd}"] = C(
            STORE_COMMANDS[cmd].replace("{X}", "{K/" + kind + "}"), 1,
            "missing|truncated|damaged|hash mismatch|index", stdout=(kind, cmd) == ("noindex",
                                                                                 "verify"))

CLI_CASES.update({  # keygen, key, plan, the top level
    "keygen-exists": C("keygen --out {KEYS}/owner.key", 2, "already exists"),
    "keygen-is-directory": C("keygen --out {TMP}", 2, "exists|directory|folder"),
    "keygen-into-store": C(
        "keygen --out {S}/owner.key", 2, "inside the sisa store"),
    "keygen-over-manifest": C("keygen --out {S}/manifest.json", 2,
                              "already exists|inside the sisa store"),
    "key-missing-file": C("key public --key-file {TMP}/nope.key", 2, "cannot open key file"),
    "key-world-readable": C("key public --key-file {TMP}/open.key", 2, "chmod 600"),
    "key-empty-file": C("key public --key-file {TMP}/empty.key", 2, "not a sisa key file"),
    "key-not-json": C("key public --key-file {TMP}/bad.key", 2, "not a sisa key file"),
    "key-partial": C("key public --key-file {TMP}/partial.key", 2, "not a sisa key file"),
    "key-directory": C("key public --key-file {TMP}", 2, "not a regular file"),
    "key-none-configured": C("key public", 2, "sisa keygen"),
    "key-env-garbage": C("key public", 2, r"\$SISA_KEY is not", env=(("SISA_KEY", "{"),)),
    "key-env-file-missing": C("key public", 2, "cannot open key file",
                              env=(("SISA_KEY_FILE", "{TMP}/nope.key"),)),
    "key-private": C("key private", 2, "invalid choice"),
    "plan-rows-0": C("plan --rows 0 --deletions-per-day 5", 2, "n_rows"),
    "plan-rows-neg": C("plan --rows=-1 --deletions-per-day 5", 2, "n_rows"),
    "plan-deletions-neg": C("plan --rows 1000 --deletions-per-day=-1", 2, "deletions_per_day"),
    "plan-shards-a": C("plan --rows 1000 --deletions-per-day 5 --shards a", 2, "--shards"),
    "plan-shards-0": C("plan --rows 1000 --deletions-per-day 5 --shards 0", 2, "n_shards"),
    "plan-shards-empty": C("plan --rows 1000 --deletions-per-day 5 --shards=", 2, "--shards"),
    "plan-slices-neg": C("plan --rows 1000 --deletions-per-day 5 --slices=-1", 2, "n_slices"),
    "plan-epochs-0": C("plan --rows 1000 --deletions-per-day 5 --epochs 0", 2, "epochs"),
    "plan-schedule-bad": C("plan --rows 1000 --deletions-per-day 5 --schedule x", 2,
                           "invalid choice"),
    "plan-measure-unknown": C("plan --rows 1000 --deletions-per-day 5 --measure x", 2,
                              "invalid choice"),
    "plan-too-many-shards": C("plan --rows 1000 --deletions-per-day 5 --shards 100000", 2,
                              "fewer than 100 rows"),
    "plan-measure-rows-0": C("plan --rows 10000 --deletions-per-day 5 --measure synthetic "
                             "--measure-rows 0", 2, "n_rows"),
    "plan-measure-model-unknown": C("plan --rows 10000 --deletions-per-day 5 --measure "
                                    "synthetic --model nosuch", 2, "unknown model"),
    "plan-no-rows": C("plan --deletions-per-day 5", 2, "required: --rows"),
    "unknown-command": C("nosuchcommand", 2, "invalid choice"),
})


def _case_params(cases: dict) -> list:
    return [pytest.param(k, v, id=k, marks=[pytest.mark.xfail(strict=True, reason=v.bug)]
                         if v.bug else []) for k, v in cases.items()]


def _key_files(d: Path) -> None:
    good = keys.generate()
    for name, data, mode in (("open.key", good.to_json(), 0o644), ("empty.key", "", 0o600),
                             ("bad.key", "not json", 0o600),
                             ("partial.key", '{"format": "sisa-key/1"}', 0o600)):
        (d / name).write_text(data)
        os.chmod(d / name, mode)


@pytest.mark.parametrize("name, case", _case_params(CLI_CASES))
def test_cli_bad_input(name: str, case: C, work: Work, monkeypatch) -> None:
    if any(a.startswith("{TMP}/") and a.endswith(".key") for a in case.argv):
        _key_files(work.root)
    argv = [work.fill(a) for a in case.argv]
    for var, value in case.env:
        monkeypatch.setenv(var, work.fill(value))
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(case.stdin))
    quiet = ["--quiet"] if argv[0] in CLI_QUIET else []
    code, out, err = cli(*argv, *quiet)
    assert "Traceback" not in err + out, err
    assert code == case.code, f"exit {code}, want {case.code}: {err.strip() or out.strip()}"
    if case.stdout:  # a verify that ran and failed: a FAIL line saying what is wrong
        assert not err.strip() and "FAIL" in out and re.search(case.match, out), (out, err)
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"stderr is not one line: {err!r}"
        line = lines[0]
        assert re.match(r"sisa( [a-z]+)?: error: ", line), line
        assert re.search(case.match, line), f"{case.match!r} not in {line!r}"
        assert FIX_WORDS.search(line.split("error: ", 1)[1]), f"no fix named: {line}"
    assert not work.changed(), f"changed: {work.changed()}"
    assert not Path(work.path("NEW")).exists(), "a failed train left a directory behind"


CLI_QUIET = ("train", "forget", "predict", "verify", "repair", "status", "history", "keygen",
             "key", "plan")


# ---------------------------------------------------------------------------- API cases
@dataclass(frozen=True)
class A:
    """An API case: ``call(ctx)`` must raise ``exc`` with a message matching ``match``."""

    call: Callable[[Ctx], object]
    exc: type[BaseException] | tuple[type[BaseException], ...] = InputError
    match: str = ""
    bug: str = ""


class Ctx:
    """Lazy access to copies of the templates for one API case."""

    def __init__(self, work: Work) -> None:
        self.work = work

    def path(self, what: str) -> str:
        return self.work.path(what)

    def model(self, what: str = "S") -> SISAClassifier:
        return SISAClassifier.load(self.path(what))

    def store(self, what: str = "S") -> Store:
        return Store.open(self.path(what))


def _forget_model(ids, st: str = "S") -> Callable[[Ctx], object]:
    return lambda c: c.model(st).forget(ids)


def _forget_fn(ids, st: str = "S") -> Callable[[Ctx], object]:
    from sisa.unlearn import forget

    return lambda c: forget(c.store(st), ids, settings=LOCAL)


RNG = np.random.default_rng(1)
X = RNG.normal(size=(120, 3))
Y = (X[:, 0] > 0).astype(np.int64)
MASK = np.arange(N_ROWS) % 2 == 0

API_IDS = {  # ids through forget(), on the int store S: name -> (ids, message, bug)
    "float": (5.0, "float", ""), "float-list": ([5.0], "is a float", ""),
    "float-array": (np.array([5.0]), "float", ""), "np-float64": (np.float64(5), "float", ""),
    "nan": (float("nan"), "float", ""), "complex": (5j, "complex", ""),
    "object": (object(), "object", ""),
    "bool": (True, "bool", ""), "bool-list": ([True], "bool", ""),
    "np-bool": (np.bool_(True), "bool", ""), "bool-mask": (MASK, "boolean mask", ""),
    "none": (None, "missing", ""), "none-list": ([None], "missing", ""),
    "bytes": (b"5", "bytes", ""), "bytes-list": ([b"5"], "bytes", ""),
    "nested": ([[5]], "list", ""), "2d-array": (np.array([[5]]), "flat", ""),
    "str": ("5", r"pass 5 \(an int\)", ""), "str-list": (["5"], "pass 5", ""),
    "str-007": (["007"], "integers", ""), "mixed": ([5, "6"], "'6'", ""),
    "huge": (2**63, "out of range", ""), "huge-neg": ([-(2**63) - 1], "out of range", ""),
    "uint64-huge": (np.array([2**63], np.uint64), "out of range", ""),
    "unknown": ([99999], "99999.*nothing was changed", ""),
    "unknown-and-known": ([5, 99999], "99999", ""),
    "already-forgotten-plus-unknown": ([9, 99999], "99999", ""),
    "empty-list": ([], "no sample ids", ""), "empty-array": (np.array([], np.int64),
                                                             "no sample ids", ""),
    "arrow-float": (pa.array([5.0]), "Arrow array of double", ""),
    "arrow-string": (pa.array(["5"]), "Arrow array of string", ""),
    "arrow-null": (pa.array([None], pa.int64()), "missing", ""),
    "dict": ({"a": 1}, "'a'|mapping", ""),
}
API_STR_IDS = {  # on the string store T
    "int": (7, r"pass '7' \(a str\)", ""), "int-list": ([7], "pass '7'", ""),
    "int-array": (np.array([7]), "strings", ""), "bytes": ([b"u5"], "bytes", ""),
    "mixed": (["u5", 1], "pass '1'", ""), "none": ([None], "missing", ""),
    "float-array": (np.array([7.0]), "float", ""), "bool": ([True], "bool", ""),
    "unknown": (["7 "], "not in store", ""), "unknown-case": (["U5"], "not in store", ""),
    "empty": (np.array([], object), "no sample ids", ""),
    # issue 22, item 12
    "surrogate": (["\ud800"], "#1 .*lone surrogate", ""),
    "surrogate-array": (np.array(["u5", "\udfff"]), "#2 .*lone surrogate", ""),
    "arrow-not-utf8": (pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(
        np.array([0, 2], np.int32).tobytes()), pa.py_buffer(b"\xff\xfe")]), "not UTF-8", ""),
    "arrow-forged-offsets": (pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(
        np.array([0, 9999, 2], np.int32).tobytes()), pa.py_buffer(b"u5")]), "invalid", ""),
    "nul": (["u5\x00"], "not in store", ""), "cr": (["u5\ru6"], "not in store", ""),
    "nfd": (["u\u0301"], "not in store", ""), "bom": (["\ufeffu5"], "not in store", ""),
}
API_CASES: dict[str, A] = {}
for name, (ids, msg, bug) in API_IDS.items():
    API_CASES[f"model.forget-int-{name}"] = A(_forget_model(ids), InputError, msg, bug)
    API_CASES[f"unlearn.forget-int-{name}"] = A(_forget_fn(ids), InputError, msg, bug)
for name, (ids, msg, bug) in API_STR_IDS.items():
    API_CASES[f"model.forget-str-{name}"] = A(_forget_model(ids, "T"), InputError, msg, bug)
    API_CASES[f"unlearn.forget-str-{name}"] = A(_forget_fn(ids, "T"), InputError, msg, bug)

API_CASES.update({
    "verify-shards-99": A(lambda c: c.model().verify(shards=[99]), InputError, "do not exist"),
    "verify-shards-neg": A(lambda c: c.model().verify(shards=[-1]), InputError,
                           "do not exist"),
    "verify-shards-str-item": A(lambda c: c.model().verify(shards=["a"]), InputError,
                                "shards"),
    "verify-shards-float": A(lambda c: c.model().verify(shards=[1.5]), InputError, "shards"),
    "verify-shards-string": A(lambda c: c.model().verify(shards="10"), InputError, "shards"),
    "verify-sample-neg": A(lambda c: c.model().verify(sample=-1), InputError, "sample"),
    "verify-sample-zero": A(lambda c: c.model().verify(sample=0), InputError, "sample"),
})


def _fit(cls=SISAClassifier, X_=X, y_=Y, store: str = "R", fit_kw: dict | None = None,
         **params) -> Callable[[Ctx], object]:
    def call(c: Ctx):
        kw = {"n_shards": 2, "n_slices": 2, "backend": "local", "store": c.path(store),
              **params}
        return cls(**kw).fit(X_, y_, **(fit_kw or {}))
    return call


def _nan_at(a: np.ndarray, value=np.nan) -> np.ndarray:
    a = a.astype(float).copy()
    a.flat[5] = value
    return a


SK = ValueError  # scikit-learn's own InvalidParameterError / check_X_y errors
API_CASES.update({  # fit over the existing store S: the old store must survive
    "fit-shards-0": A(_fit(n_shards=0), SK, "n_shards"),
    "fit-slices-neg": A(_fit(n_slices=-1), SK, "n_slices"),
    "fit-shards-float": A(_fit(n_shards=1.5), SK, "n_shards"),
    "fit-shards-str": A(_fit(n_shards="2"), SK, "n_shards"),
    "fit-shards-huge": A(_fit(n_shards=10**6), InputError, "fewer shards"),
    "fit-epochs-0": A(_fit(epochs=0), SK, "epochs"),
    "fit-backend": A(_fit(backend="gpu"), SK, "backend"),
    "fit-seed-neg": A(_fit(random_state=-1), SK, "random_state"),
    "fit-estimator-str": A(_fit(estimator="sgd"), SK, "estimator"),
    "fit-estimator-object": A(_fit(estimator=object()), SK, "estimator"),
    "fit-aggregation": A(_fit(aggregation="median"), SK, "aggregation"),
    "fit-X-nan": A(_fit(X_=_nan_at(X)), SK, "NaN"),
    "fit-X-inf": A(_fit(X_=_nan_at(X, np.inf)), SK, "infinity"),
    "fit-y-nan": A(_fit(y_=_nan_at(Y)), SK, "NaN"),
    "fit-len-mismatch": A(_fit(y_=Y[:-1]), SK, "inconsistent"),
    "fit-X-1d": A(_fit(X_=X[:, 0]), SK, "2D array"),
    "fit-X-empty": A(_fit(X_=X[:0], y_=Y[:0]), SK, "0 sample"),
    "fit-X-strings": A(_fit(X_=np.full((120, 3), "a")), SK, "convert string"),
    "fit-y-none": A(_fit(y_=None), SK, "requires y"),
    "fit-y-2d": A(_fit(y_=np.c_[Y, Y]), SK, "1d array"),
    "fit-one-class": A(_fit(y_=np.zeros(120, np.int64)), InputError, "only 1 class"),
    "fit-continuous-classes": A(_fit(y_=X[:, 1]), SK, "continuous"),
    "fit-ids-dup": A(_fit(fit_kw={"sample_ids": [0] * 120}), InputError, "duplicate"),
    "fit-ids-float": A(_fit(fit_kw={"sample_ids": np.arange(120) * 1.0}), InputError,
                       "float64"),
    "fit-ids-bool": A(_fit(fit_kw={"sample_ids": np.arange(120) % 2 == 0}), InputError,
                      "bool"),
    "fit-ids-short": A(_fit(fit_kw={"sample_ids": np.arange(119)}), InputError,
                       "one id per row"),
    "fit-ids-none": A(_fit(fit_kw={"sample_ids": [None] * 120}), InputError, "None"),
    "fit-ids-mixed": A(_fit(fit_kw={"sample_ids": [1, "a"] * 60}), InputError, ""),
    "fit-ids-2d": A(_fit(fit_kw={"sample_ids": np.arange(120).reshape(60, 2)}), InputError,
                    "one id per row"),
    "fit-ids-bytes": A(_fit(fit_kw={"sample_ids": [b"%d" % i for i in range(120)]}),
                       InputError, "dtype"),
    "fit-ids-huge": A(_fit(fit_kw={"sample_ids": [2**64 + i for i in range(120)]}),
                      InputError, "range|integers"),
    "fit-store-is-file": A(_fit(store="K/afile"), StoreError, "is a file"),
    "fit-store-is-foreign": A(_fit(store="K/junk"), StoreError, "not empty"),
    "fit-table-label-missing": A(_fit(X_=pa.table({"a": X[:, 0], "y": Y}), y_="q"),
                                 InputError, "not found"),
    "fit-table-label-nan": A(_fit(X_=pa.table({"a": X[:, 0], "y": _nan_at(Y)}), y_="y"),
                             InputError, "NaN"),
    "fit-path-missing": A(lambda c: SISAClassifier(n_shards=2, n_slices=2, backend="local",
                                                   store=c.path("R")).fit(
        c.path("F") + "/nosuch.parquet", "y"), InputError, "does not exist"),
    "fit-path-is-store": A(lambda c: SISAClassifier(n_shards=2, n_slices=2, backend="local",
                                                    store=c.path("R")).fit(c.path("T"), "y"),
                           InputError, "is a sisa store"),
    "fit-path-nan": A(lambda c: SISAClassifier(n_shards=2, n_slices=2, backend="local",
                                               store=c.path("R")).fit(
        c.path("F") + "/nan_feat.parquet", "y"), InputError, "non-finite"),
    "fit-store-other-layout": A(lambda c: SISAClassifier(n_shards=3, n_slices=2,
                                                         backend="local").fit(c.store("S")),
                                InputError, "shard|layout|3"),
    "regressor-string-y": A(_fit(SISARegressor, y_=np.array(["a", "b"] * 60)), InputError,
                            "numeric labels"),
    "regressor-nan-y": A(_fit(SISARegressor, y_=_nan_at(X[:, 1])), SK, "NaN"),
    "regressor-inf-y": A(_fit(SISARegressor, y_=_nan_at(X[:, 1], np.inf)), SK, "infinity"),
    "regressor-load-classifier": A(lambda c: SISARegressor.load(c.path("S")), InputError,
                                   "SISAClassifier"),
})


def _create(store: str = "R", X_=X, y_=Y, overwrite: bool = True,
            **kw) -> Callable[[Ctx], object]:
    rows = {k: kw.pop(k) for k in ("sample_ids", "groups", "deletion_prob") if k in kw}
    return lambda c: Store.create(c.path(store), X_, y_, overwrite=overwrite, **rows,
                                  options=IngestOptions(**{"n_shards": 2, "n_slices": 2, **kw}))


API_CASES.update({
    "create-exists": A(_create(overwrite=False), InputError, "overwrite=True"),
    "create-shards-0": A(_create(n_shards=0), InputError, "n_shards"),
    "create-slices-0": A(_create(n_slices=0), InputError, "n_slices"),
    "create-no-y": A(_create(y_=None), InputError, "pass y="),
    "create-label-and-ids": A(_create(X_=pa.table({"a": X[:, 0], "y": Y}), y_=None, label="y",
                                      sample_ids=np.arange(120)), InputError, "id_column"),
    "create-label-missing": A(_create(X_=pa.table({"a": X[:, 0], "y": Y}), y_=None, label="q"),
                              InputError, "not found"),
    "create-groups-short": A(_create(groups=np.arange(5)), InputError, "one key per row"),
    "create-dprob-range": A(_create(deletion_prob=np.full(120, 2.0), hot_shards=1),
                            InputError, r"\[0, 1\]"),
    "create-hot-no-prob": A(_create(hot_shards=1), InputError, "deletion prob"),
    "create-nan": A(_create(X_=_nan_at(X)), InputError, "non-finite"),
    "create-dup-ids": A(_create(sample_ids=[1] * 120), InputError, "duplicate"),
    "create-path-file": A(_create(store="K/afile"), StoreError, "is a file"),
    "create-path-foreign": A(_create(store="K/junk"), StoreError, "not empty"),
    "create-dtype": A(_create(dtype="nosuch"), InputError, "dtype must be float32"),
    "open-missing": A(lambda c: Store.open(c.path("K/nosuch")), StoreError, "no sisa store"),
    "open-file": A(lambda c: Store.open(c.path("K/afile")), StoreError, "no sisa store"),
    "open-empty-dir": A(lambda c: Store.open(c.path("K/empty")), StoreError, "no sisa store"),
    "open-torn": A(lambda c: Store.open(c.path("K/torn")), StoreError, "corrupt"),
    "open-old": A(lambda c: Store.open(c.path("K/old")), StoreError, "sisa-store/2"),
    "open-bad-checksum": A(lambda c: Store.open(c.path("K/badsum")), StoreError, "corrupt"),
    "open-missing-data": A(lambda c: Store.open(c.path("K/nodata")), StoreError, "missing"),
    "load-missing": A(lambda c: SISAClassifier.load(c.path("K/nosuch")), StoreError,
                      "no sisa store"),
})


@pytest.mark.parametrize("name, case", _case_params(API_CASES))
def test_api_bad_input(name: str, case: A, work: Work) -> None:
    ctx = Ctx(work)
    with pytest.raises(Exception) as info:
        case.call(ctx)
    exc = info.value
    assert isinstance(exc, (ValueError, SisaError)), f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, case.exc), f"{type(exc).__name__}, want {case.exc}: {exc}"
    text = str(exc)
    if isinstance(exc, SisaError):
        assert len(text.strip().splitlines()) == 1, text
        assert FIX_WORDS.search(text), f"no fix named: {text}"
    assert re.search(case.match, text), f"{case.match!r} not in {text!r}"
    assert not work.changed(), f"changed: {work.changed()}"


# ---------------------------------------------------------------------------- the rest
def test_the_sweep_has_at_least_150_distinct_inputs() -> None:
    assert len(CLI_CASES) + len(API_CASES) >= 150
    assert len(set(CLI_CASES.values())) == len(CLI_CASES)  # no case is a copy of another


def test_a_failed_overwrite_leaves_no_new_directories(work: Work) -> None:
    store = work.copy("R")
    before = sorted(p for p in store.rglob("*") if p.is_dir())
    code, _, _ = cli("train", work.path("F") + "/one_class.parquet", "--label", "y",
                     "--backend", "local", "--store", str(store), "--overwrite", "--quiet")
    assert code == 2
    assert sorted(p for p in store.rglob("*") if p.is_dir()) == before


def test_forget_on_a_damaged_checkpoint_changes_nothing(work: Work) -> None:
    store = work.copy("S")
    ck = sorted((store / "checkpoints").rglob("*.pkl"))
    for p in ck:
        raw = bytearray(p.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        os.chmod(p, 0o644)
        p.write_bytes(bytes(raw))
    before = tree_digest(store)
    code, _, err = cli("forget", str(store), "--id", "5", "--backend", "local", "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert tree_digest(store) == before


def test_ids_files_are_read_exactly_as_stored(work: Work) -> None:
    """Issue 22, item 12: lines end at \\n or \\r\\n only; what is between is the id."""
    for st, raw, gone, kept in (
            ("T", b"u5\r\nu6\r\na b\r\n", ["u5", "u6", "a b"], ["u7", "007", "7"]),
            ("T", b"007\n7\nu8", ["007", "7", "u8"], ["u7"]),
            ("S", b"5\r\n6,7\r8\n", [5, 6, 7, 8], [4, 10])):
        store = work.copy(st)
        ids = work.root / f"ids-{st}.txt"
        ids.write_bytes(raw)
        code, out, err = cli("forget", str(store), "--ids", str(ids), "--backend", "local",
                             "--json")
        assert code == 0, err
        assert json.loads(out)["n_ids"] == len(gone)
        found = Store.open(str(store)).rows.locate(gone + kept)[0]
        assert found.tolist() == [False] * len(gone) + [True] * len(kept)
        shutil.rmtree(store)
