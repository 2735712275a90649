"""``denoise verify OUT``: prove that an output is complete, intact and exactly what its manifest
says - or name the shard, the row and what is wrong.

Checks, cheapest first; each problem is one line ``shard row R: what`` (rows counted from 0
within the shard); up to ``max_problems`` are collected, then :class:`VerifyError` lists them.
1. the manifest's sums, the tokenizer, every shard's size and sha256, no unlisted file;
2. every row (:mod:`.rowcheck`): schema, vocabulary, padding, labels, the lengths each component
   dictates, mode/EOS, sentinels; packed rows first get their segment structure checked;
3. the rebuild: each row's raw chunk, and chunks that chain through the file's stream;
4. with ``sources`` (:mod:`.sources`): the inputs are read and tokenized again through the same
   code as ``prepare`` and every row is regenerated and compared bit for bit.
Steps 2-4 read rows through ``output.shuffled.logical_shards``: a shuffled output's rows are
checked in its source's order, under the source's shard names (:mod:`.shuffledcheck`).
docs/architecture.md ("verify") details each step and its trade-offs; figures:
benchmarks/README_verify.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ..errors import OutputError, VerifyError
from ..output.layout import DATA_DIR, HF_STATE, MANIFEST, TOKENIZER, output_path
from ..output.manifest import datasets, read_manifest
from ..output.remote import is_output_url, localize
from ..output.schema import shard_schema
from ..output.shards import FORMATS, batch_arrays, sha256_file
from ..output.shuffled import SHUFFLE, LogicalShard, is_shuffled, logical_shards
from ..source.special import reserved_from_json
from .packedcheck import packed_checks
from .problems import Enough, FileChain, Problems, VerifyReport
from .rowcheck import RowChecker, first_col
from .shuffledcheck import check_shuffle_manifest, check_shuffled_shards
from .sources import DatasetCheck, check_sources
from .spec import OutputSpec, unpacked_view


def epoch_outputs(
    out: Path, probs: Problems, split: str | None = None
) -> list[tuple[str, Path, dict[str, Any]]]:
    """The datasets of an output (``output.manifest.datasets``), with the top-level manifest of
    ``prepare --epochs K`` checked against the epochs' (rows per epoch, epoch numbers, shared
    configuration and tokenizer)."""
    m = read_manifest(out)
    res = datasets(out, split)
    if m.get("split_dirs"):
        _check_splits(m, res, probs)
        return res
    if not m.get("epoch_dirs"):
        return res
    for k, (prefix, _, em) in enumerate(res):
        probs.prefix = prefix
        if em.get("epoch") != k:
            probs.add(
                f"{MANIFEST}: epoch {em.get('epoch')}, the output's epoch_dirs put epoch {k} here"
            )
        rows = m.get("totals", {}).get("rows_per_epoch", [])
        if k < len(rows) and em["totals"]["rows"] != rows[k]:
            probs.add(
                f"{MANIFEST}: {em['totals']['rows']:,} rows, the top-level manifest says {rows[k]:,}"
            )
        for key in ("config", "components", "tokenizer", "seed", "layout", "format"):
            if em.get(key) != m.get(key):
                probs.add(f"{MANIFEST}: {key} differs from the top-level manifest's")
    probs.prefix = ""
    data = out / DATA_DIR
    if data.is_dir() and any(data.iterdir()):
        probs.add("data/: holds files, but this output keeps its shards in the epoch directories")
    return res


def _check_splits(
    m: dict[str, Any], res: list[tuple[str, Path, dict[str, Any]]], probs: Problems
) -> None:
    """The top-level manifest of ``prepare --split`` against its splits' manifests."""
    rows = m.get("totals", {}).get("rows_per_split", {})
    for prefix, _, sm in res:
        probs.prefix = prefix
        name = prefix.rstrip("/")
        if sm.get("split") != name:
            probs.add(
                f"{MANIFEST}: split {sm.get('split')!r}, the top-level manifest puts {name!r} here"
            )
        if name in rows and sm["totals"]["rows"] != rows[name]:
            probs.add(
                f"{MANIFEST}: {sm['totals']['rows']:,} rows, the top-level manifest says {rows[name]:,}"
            )
        for key in ("config", "components", "tokenizer", "seed", "layout", "format"):
            if sm.get(key) != m.get(key):
                probs.add(f"{MANIFEST}: {key} differs from the top-level manifest's")
    probs.prefix = ""


def verify(
    out: str | Path,
    *,
    sources: Sequence[str] | None = None,
    split: str | None = None,
    max_problems: int = 20,
    checksums: bool = True,
) -> VerifyReport:
    """Check an output directory (see the module docstring). Returns a report, or raises
    :class:`VerifyError` listing up to ``max_problems`` problems (``shard row R: what``)."""
    t0 = time.perf_counter()
    rep = VerifyReport(str(out))
    probs = Problems(max_problems)
    try:
        try:
            # an output behind a URL: its local copy (output.remote.localize), checked whole
            outp = localize(str(out)) if is_output_url(out) else Path(out)
            dsets = epoch_outputs(outp, probs, split)
        except OutputError as e:  # no (or an unreadable) manifest: not a complete output
            probs.add(str(e))
            raise Enough from None
        checked: list[DatasetCheck] = []
        for prefix, path, m in dsets:
            probs.prefix = prefix
            if not _check_paths(path, m, probs):
                raise Enough  # read nothing a crafted path leads to
            try:
                _check_manifest(path, m, probs, rep)
                spec = OutputSpec.from_manifest(m, tokenizer_specials(path, m))
                shards = logical_shards(path, m)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                probs.add(f"{MANIFEST}: malformed ({type(e).__name__}: {e})")
                raise Enough from None
            except OutputError as e:  # a shuffled output's shuffle entry
                probs.add(str(e))
                raise Enough from None
            _check_files(path, m, probs, rep, checksums)
            ok_rows = _check_rows(path, m, shards, spec, probs, rep)
            checked.append(DatasetCheck(prefix, path, m, spec, ok_rows, shards))
        if sources:
            check_sources(checked, sources, probs, rep)
    except Enough:
        pass
    rep.seconds = time.perf_counter() - t0
    if probs.items:
        more = " (stopped there; raise --max-problems to see more)" if probs.truncated else ""
        raise VerifyError(
            f"{out}: {len(probs.items)} problem(s) found{more}:\n  " + "\n  ".join(probs.items)
        )
    return rep


def tokenizer_specials(out: Path, m: dict[str, Any]) -> dict[int, str]:
    """Every special id of ``OUT/tokenizer.json`` that ``prepare`` reserves (all but unk, see
    :func:`denoise_cli.source.special.special_token_ids`); empty when the file is missing or
    does not match the manifest's sha256 (already a problem of its own)."""
    p = out / TOKENIZER
    tok = m["tokenizer"]
    if not p.is_file():
        return {}
    data = p.read_bytes()
    if hashlib.sha256(data).hexdigest() != tok["sha256"]:
        return {}
    unk = int(tok["unk"]["id"]) if tok.get("unk") else None
    try:
        return reserved_from_json(
            data.decode("utf-8"), str(tok.get("sentinel_template", "<extra_id_{}>")), unk
        )
    except Exception:  # an unreadable tokenizer: the row checks run without the extra class
        return {}


def _check_paths(out: Path, m: dict[str, Any], probs: Problems) -> bool:
    """Every path the manifest and ``state.json`` list must stay inside the output
    (``layout.output_path``); False (with the problems added) if one does not."""
    rels: list[tuple[str, object]] = []
    try:
        rels += [(f"{MANIFEST}: shard path", s["path"]) for s in m["shards"]]
    except (KeyError, TypeError) as e:
        probs.add(f"{MANIFEST}: malformed ({type(e).__name__}: {e})")
        return False
    st = out / HF_STATE
    if st.is_file():
        try:
            rels += [
                (f"{HF_STATE}: data file", d["filename"])
                for d in orjson.loads(st.read_bytes())["_data_files"]
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass  # reported as malformed by _check_files
    ok = True
    for what, rel in rels:
        try:
            output_path(out, rel, what)
        except OutputError as e:
            probs.add(str(e))
            ok = False
    return ok


def _check_manifest(out: Path, m: dict[str, Any], probs: Problems, rep: VerifyReport) -> None:
    """The manifest's sums. The per-file accounting runs over the logical shards (a shuffled
    output: the source's shard entries); the shuffled shards are checked by
    :func:`.shuffledcheck.check_shuffle_manifest`."""
    files, tot = m["files"], m["totals"]
    shards = m[SHUFFLE]["source_shards"] if is_shuffled(m) else m["shards"]
    rep.files = len(files)
    rep.shards += len(m["shards"])
    if is_shuffled(m):
        check_shuffle_manifest(m, probs)
    if not isinstance(m.get("format"), str) or m["format"] not in FORMATS:
        probs.add(f"{MANIFEST}: unknown format {m.get('format')!r}")
    nsum = sum(int(s["rows"]) for s in shards)
    fsum = sum(int(f["rows"]) for f in files)
    if not nsum == fsum == int(tot["rows"]):
        probs.add(
            f"{MANIFEST}: row counts disagree: shards {nsum:,}, files {fsum:,}, totals {tot['rows']:,}"
        )
    for key in ("tokens", "tokens_used", "tail_tokens", "records", "docs"):
        s = sum(int(f[key]) if key in f else int(f["stats"][key]) for f in files)
        if s != int(tot[key]):
            probs.add(f"{MANIFEST}: totals.{key} is {tot[key]:,}, the files add up to {s:,}")
    for f in files:
        name = f"file {f['index']} ({f['name']})"
        if int(f["tokens"]) != int(f["tokens_used"]) + int(f["tail_tokens"]):
            probs.add(
                f"{MANIFEST}: {name}: tokens {f['tokens']:,} != used {f['tokens_used']:,} + "
                f"tail {f['tail_tokens']:,}"
            )
        st = f["stats"]
        if int(st["records"]) != int(st["docs"]) + sum(int(v) for v in st["skipped"].values()):
            probs.add(
                f"{MANIFEST}: {name}: records {st['records']:,} != docs {st['docs']:,} + "
                f"skipped {sum(st['skipped'].values()):,}"
            )
        own = [s for s in shards if s["source_files"] == [f["index"]]]
        rsum = sum(int(s["rows"]) for s in own)
        if rsum != int(f["rows"]):
            probs.add(f"{MANIFEST}: {name}: {f['rows']:,} rows, its shards list {rsum:,}")
        tsum = sum(int(s["tokens"]) for s in own)
        if tsum != int(f["tokens_used"]):
            probs.add(
                f"{MANIFEST}: {name}: tokens_used {f['tokens_used']:,}, its shards list {tsum:,}"
            )
    idx = {int(f["index"]) for f in files}
    seen: set[str] = set()
    for s in shards:
        if len(s["source_files"]) != 1 or s["source_files"][0] not in idx:
            probs.add(
                f"{s['path']}: source_files {s['source_files']} is not one file of the manifest"
            )
        if s["path"] in seen:
            probs.add(f"{s['path']}: listed twice in the manifest")
        seen.add(s["path"])
    if len({c["index"] for c in m["components"]}) != len(m["components"]) or any(
        c["index"] != i for i, c in enumerate(m["components"])
    ):
        probs.add(f"{MANIFEST}: components are not numbered 0..{len(m['components']) - 1}")
    tok = out / TOKENIZER
    want = m["tokenizer"]["sha256"]
    if not tok.is_file():
        probs.add(f"tokenizer.json: missing (the manifest's tokenizer sha256 is {want[:12]}...)")
    else:
        got = hashlib.sha256(tok.read_bytes()).hexdigest()
        if got != want:
            probs.add(
                f"tokenizer.json: sha256 {got[:12]}... does not match the manifest's {want[:12]}..."
            )
    for c in ("manifest sums", "tokenizer sha256"):
        if c not in rep.checks:
            rep.checks.append(c)


def _check_files(
    out: Path, m: dict[str, Any], probs: Problems, rep: VerifyReport, checksums: bool
) -> None:
    listed = set()
    for s in m["shards"]:
        rel = s["path"]
        listed.add(rel)
        p = out / rel
        if not p.is_file():
            probs.add(f"{rel}: missing (listed in the manifest with {s['rows']:,} rows)")
            continue
        size = p.stat().st_size
        rep.bytes += size
        if size != int(s["bytes"]):
            probs.add(
                f"{rel}: {size:,} bytes, the manifest says {s['bytes']:,} (truncated or rewritten)"
            )
        elif checksums:
            got = sha256_file(p)
            if got != s["sha256"]:
                probs.add(
                    f"{rel}: sha256 {got[:12]}... does not match the manifest's {s['sha256'][:12]}..."
                )
    data = out / DATA_DIR
    if data.is_dir():
        for p in sorted(data.iterdir()):
            rel = f"data/{p.name}"
            if rel not in listed:
                probs.add(f"{rel}: not listed in the manifest (left over from another run?)")
    fmt = FORMATS.get(m["format"]) if isinstance(m.get("format"), str) else None
    if fmt is not None and fmt.load_from_disk and (out / HF_STATE).is_file():
        try:
            st = orjson.loads((out / HF_STATE).read_bytes())
            files = [d["filename"] for d in st["_data_files"]]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            probs.add(f"state.json: malformed ({e})")
        else:
            if files != [s["path"] for s in m["shards"]]:
                probs.add("state.json: its data files differ from the manifest's shards")
    c = "shard sizes" + (" and sha256" if checksums else "")
    if c not in rep.checks:
        rep.checks.append(c)


def _file_names(m: dict[str, Any]) -> dict[int, str]:
    return {int(f["index"]): str(f["name"]) for f in m["files"]}


def _check_rows(
    out: Path,
    m: dict[str, Any],
    shards: list[LogicalShard],
    spec: OutputSpec,
    probs: Problems,
    rep: VerifyReport,
) -> dict[str, np.ndarray]:
    """Steps 2-3 over every logical shard (``output.shuffled.logical_shards``): a shuffled
    output's rows are checked in their source's order, so its chains prove the permutation;
    returns, per shard name, the mask of rows that passed."""
    checker = RowChecker(spec)
    want_schema = shard_schema(m)
    raw = checker.raw
    files = {int(f["index"]): f for f in m["files"]}
    chains: dict[int, FileChain] = {}
    ok_rows: dict[str, np.ndarray] = {}
    packs: dict[int, _PackedFile] = {}
    if is_shuffled(m):
        check_shuffled_shards(out, m, want_schema, probs)
    rebuilt_ok = True  # rebuilt shards share one read of the shuffled rows: one failure is all
    for ls in shards:
        sh, rel = ls.entry, ls.rel
        if not ls.exists() or (ls.path is None and not rebuilt_ok):
            continue
        fidx = int(sh["source_files"][0]) if sh["source_files"] else -1
        ch = chains.setdefault(fidx, FileChain())
        nrows = 0
        tokens = 0
        oks: list[np.ndarray] = []
        try:
            schema, batches = ls.open()
            if not schema.equals(want_schema):
                probs.add(
                    f"{rel}: schema differs from the one this manifest implies:\n    got  {schema}\n"
                    f"    want {want_schema}".replace("\n", "\n    ")
                )
                continue
            for rb in batches:
                n = rb.num_rows
                if spec.packed:
                    tokens += _packed_batch(
                        batch_arrays(rb), rel, nrows, fidx, spec, checker, probs, oks, packs
                    )
                    nrows += n
                    continue
                a = batch_arrays(rb)
                msgs, ok = checker.check(a, probs.left)
                for r, msg in msgs:
                    probs.add(f"{rel} row {nrows + r}: {msg}")
                oks.append(ok)
                den = a["denoiser"].astype(np.int64)
                dsafe = np.clip(den, 0, len(raw) - 1)
                ex, off, sf = a["example_index"], a["token_offset"], a["source_file"]
                rl = raw[dsafe]
                tokens += int(rl.sum())
                # chain: consecutive rows of the file
                prev_ex = np.concatenate([[ch.example - 1], ex[:-1]])
                prev_end = np.concatenate([[ch.offset], off[:-1] + rl[:-1]])
                bad_sf = sf != fidx
                bad_ex = ex != prev_ex + 1
                bad_off = off != prev_end
                for r in np.flatnonzero(bad_sf | bad_ex | bad_off)[: probs.left]:
                    r = int(r)
                    if bad_sf[r]:
                        probs.add(
                            f"{rel} row {nrows + r}: source_file {sf[r]}, but the shard holds rows "
                            f"of file {fidx} only"
                        )
                    elif bad_ex[r]:
                        probs.add(
                            f"{rel} row {nrows + r}: example_index {ex[r]}, expected {prev_ex[r] + 1} "
                            "(rows are written in order per file)"
                        )
                    else:
                        what = (
                            "the file's first chunk starts at 0"
                            if ch.rows == 0 and r == 0
                            else f"the previous chunk ends there: raw_length {rl[r - 1] if r else '...'} "
                            f"after token_offset {off[r - 1] if r else '...'}"
                        )
                        probs.add(
                            f"{rel} row {nrows + r}: token_offset {off[r]}, expected {prev_end[r]} ({what})"
                        )
                if n:
                    ch.example = int(ex[-1]) + 1
                    ch.offset = int(off[-1] + rl[-1])
                    ch.rows += n
                    ch.where = f"{rel} row {nrows + n - 1}"
                nrows += n
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError, OutputError) as e:
            probs.add(f"{rel}: unreadable after row {nrows} ({type(e).__name__}: {e})")
            rebuilt_ok = rebuilt_ok and ls.path is not None
            continue
        finally:
            rep.rows += nrows
            rep.tokens += tokens
            if oks:
                ok_rows[rel] = np.concatenate(oks)
        if spec.packed:
            ch.rows += nrows
            ch.where = f"{rel} row {nrows - 1}"
        if nrows != int(sh["rows"]):
            probs.add(f"{rel}: holds {nrows:,} rows, the manifest says {sh['rows']:,}")
        elif spec.packed and packs.get(fidx, _PackedFile()).broken:
            pass  # the examples of the rows that failed are not counted
        elif tokens != int(sh["tokens"]):
            probs.add(
                f"{rel}: its rows hold {tokens:,} raw tokens, the manifest says {sh['tokens']:,}"
            )
    for fidx, pf in packs.items():
        if not pf.broken:
            chains[fidx].offset = _packed_chain(pf, probs)
    for fidx, ch in chains.items():
        f = files.get(fidx)
        if f is None or packs.get(fidx, _PackedFile()).broken:
            continue
        if ch.rows == int(f["rows"]) and ch.offset != int(f["tokens_used"]):
            probs.add(
                f"{ch.where}: the file's last chunk ends at token {ch.offset:,}, "
                f"file {fidx} ({f['name']}) used {f['tokens_used']:,} tokens"
            )
    rep.checks += [
        c
        for c in (
            "schema",
            "vocabulary",
            "padding/attention",
            "labels -100",
            "lengths per component",
            "mode/EOS",
            "sentinel order and spans",
            "rebuilt chunk lengths and offsets",
            *(["shuffled rows: the source's in the seed's order"] if is_shuffled(m) else []),
            *(
                ["packed segments (ids, positions, masks, lengths, example order)"]
                if spec.packed
                else []
            ),
        )
        if c not in rep.checks
    ]
    return ok_rows


@dataclass
class _PackedFile:
    """A packed file's examples, gathered over its shards (the chain is checked in example
    order at the end: a row holds examples from anywhere in its group)."""

    broken: bool = False  # some row failed the packed structure checks
    last_first: int = -1  # first example of the previous row
    parts: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)


def _packed_batch(
    pa_: dict[str, np.ndarray],
    rel: str,
    start: int,
    fidx: int,
    spec: OutputSpec,
    checker: RowChecker,
    probs: Problems,
    oks: list[np.ndarray],
    packs: dict[int, _PackedFile],
) -> int:
    """Row checks of one batch of packed rows: the packed structure, then every example with the
    unpacked checks at the example budget; gathers the examples for the chain check. Returns
    the batch's raw tokens."""
    pf = packs.setdefault(fidx, _PackedFile())
    pmsgs, pok = packed_checks(pa_, spec, probs.left)
    for r, msg in pmsgs:
        probs.add(f"{rel} row {start + r}: {msg}")
    sf = pa_["source_file"]
    bad_sf = pok & (sf != fidx)
    for r in np.flatnonzero(bad_sf)[: probs.left]:
        probs.add(
            f"{rel} row {start + int(r)}: source_file {sf[r]}, but the shard holds rows of file "
            f"{fidx} only"
        )
    pok &= ~bad_sf
    if not pok.all():
        pf.broken = True
    rowid = np.flatnonzero(pok)
    a = unpacked_view({k: v[rowid] for k, v in pa_.items()}, spec)
    prow = rowid[a["packed_row"]]
    pseg = a["segment"]
    msgs, ok = checker.check(a, probs.left)
    for r, msg in msgs:
        probs.add(f"{rel} row {start + int(prow[r])} segment {int(pseg[r]) + 1}: {msg}")
    rok = pok.copy()
    rok[prow[~ok]] = False
    oks.append(rok)
    # rows in the order of their first example
    first = pa_["segment_example_index"][rowid, 0]
    prev = np.concatenate([[pf.last_first], first[:-1]])
    bad = first <= prev
    for i in np.flatnonzero(bad)[: probs.left]:
        probs.add(
            f"{rel} row {start + int(rowid[i])}: its first example {first[i]} comes after "
            f"example {prev[i]} of the previous row (rows are ordered by their first example)"
        )
    if len(first):
        pf.last_first = int(first[-1])
    rl = checker.raw[np.clip(a["denoiser"].astype(np.int64), 0, len(checker.raw) - 1)]
    pf.where.append(rel)
    pf.parts.append(
        (
            a["example_index"].astype(np.int64),
            a["token_offset"].astype(np.int64),
            rl,
            np.full(len(rl), len(pf.where) - 1),
            start + prow,
            pseg,
        )
    )
    return int(rl.sum())


def _packed_chain(pf: _PackedFile, probs: Problems) -> int:
    """The examples of a packed file, in example order, must be 0..n-1 and chain (each starts
    where the previous one ends, the first at 0); returns where the last one ends."""
    if not pf.parts:
        return 0
    ex, off, rl, shard, row, seg = (np.concatenate([p[k] for p in pf.parts]) for k in range(6))
    o = np.argsort(ex, kind="stable")
    ex, off, rl, shard, row, seg = ex[o], off[o], rl[o], shard[o], row[o], seg[o]

    def where(i: int) -> str:
        return f"{pf.where[int(shard[i])]} row {int(row[i])} segment {int(seg[i]) + 1}"

    want = np.arange(len(ex))
    bad_ex = ex != want
    if bad_ex.any():
        i = first_col(bad_ex)
        probs.add(
            f"{where(i)}: example_index {ex[i]}, expected {want[i]} (the file's examples, in "
            "example order, must be 0..n-1: one is missing or repeated)"
        )
        return int(off[-1] + rl[-1])
    prev_end = np.concatenate([[0], off[:-1] + rl[:-1]])
    for i in np.flatnonzero(off != prev_end)[: probs.left]:
        what = (
            "the file's first chunk starts at 0"
            if i == 0
            else f"example {i - 1} ends there: raw_length {rl[i - 1]} after token_offset {off[i - 1]}"
        )
        probs.add(f"{where(int(i))}: token_offset {off[i]}, expected {prev_end[i]} ({what})")
    return int(off[-1] + rl[-1])
