"""``verify --source``: read and tokenize the inputs again through the same code as ``prepare``
(``source.stream.token_stream``), cut the same groups (``rows.chunk``), regenerate every group's
rows (``prepare.worker.group_rows``) and compare them with the shards, most specific difference
first: the drawn component, the offset, the rebuilt raw chunk, then the whole row bit for bit.
Each file is read and tokenized once for all the epochs of a ``--epochs K`` output; every token
is accounted for. Only comparisons live here. See docs/architecture.md ("verify").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import PACK_ALGORITHM, Lengths, PrepareConfig
from ..errors import DenoiseError, OutputError
from ..output.layout import MANIFEST, TOKENIZER
from ..output.manifest import prepare_config
from ..output.shards import batch_arrays
from ..output.shuffled import LogicalShard
from ..prepare.worker import group_rows
from ..rows.base import Rows, SpecialIds
from ..rows.chunk import Chunker, Group
from ..rows.packing import PackedRows
from ..rows.plan import ComponentPlan, plans_for
from ..source.discover import InputFile, find_inputs
from ..source.read import FileStats
from ..source.stream import SplitFilter, token_stream
from ..source.tokenize import TokenizerInfo
from ..source.units import stream_key, unit_from_entry
from .problems import FileChain, Problems, VerifyReport
from .rowcheck import RowChecker, first_col
from .spec import OutputSpec, unpacked_view


@dataclass
class DatasetCheck:
    """One dataset of an output after the row pass: which rows passed, per shard."""

    prefix: str  # "" or "epoch-k/"
    path: Path
    m: dict[str, Any]
    spec: OutputSpec
    ok_rows: dict[str, np.ndarray]  # by LogicalShard.rel
    shards: list[LogicalShard]  # output.shuffled.logical_shards(path, m)


@dataclass
class _EpochCheck:
    """One dataset's side of a source file: its chunker, rows and comparison state."""

    ds: DatasetCheck
    entry: dict[str, Any]  # the file's entry in this dataset's manifest
    chunker: Chunker
    cursor: RowCursor
    regen: Regen
    state: FileChain
    tail: int = 0


def check_sources(
    checked: Sequence[DatasetCheck],
    sources: Sequence[str],
    probs: Problems,
    rep: VerifyReport,
) -> None:
    """Regenerate every dataset of an output from ``sources`` (see the module docstring).
    The splits of a ``--split`` output read different documents: each is checked on its own."""
    names = [ds.m.get("split") for ds in checked]
    if any(names):
        for ds in checked:
            _check_sources([ds], sources, probs, rep)
    else:
        _check_sources(checked, sources, probs, rep)


def _split_filter(m: dict[str, Any], cfg: PrepareConfig, key: int) -> SplitFilter | None:
    """The documents of a split dataset's manifest (None for a dataset without splits);
    ``key``: the file's (or unit's) ``source.units.stream_key``, as ``prepare`` uses it."""
    split = m.get("split")
    if split is None:
        return None
    names = [n for n, _ in cfg.splits]
    if split not in names:
        raise OutputError(f"{MANIFEST}: split {split!r} is not among the config's {names}")
    return SplitFilter(cfg.seed, key, tuple(f for _, f in cfg.splits), names.index(split))


def _check_sources(
    checked: Sequence[DatasetCheck],
    sources: Sequence[str],
    probs: Problems,
    rep: VerifyReport,
) -> None:
    if not checked:
        return
    first = checked[0]
    m = first.m
    probs.prefix = ""
    try:
        inputs = find_inputs(list(sources))
    except DenoiseError as e:
        probs.add(f"--source: {e}")
        return
    cfg = prepare_config(m)
    plans = plans_for(cfg)
    pk = m.get("packing")
    if pk:
        used = pk.get("algorithm", "first-fit-v1")
        if used != PACK_ALGORITHM:
            probs.add(
                f"{MANIFEST}: rows were packed by {used!r}, this version packs with "
                f"{PACK_ALGORITHM!r} (cannot regenerate rows; verify with the denoise that wrote them)"
            )
            return
    if [p.to_dict() for p in plans] != m["components"]:
        probs.add(
            f"{MANIFEST}: components differ from what this version derives from the config "
            "(cannot regenerate rows)"
        )
        return
    tok = TokenizerInfo.from_dict(
        m["tokenizer"], (first.path / TOKENIZER).read_text(encoding="utf-8")
    )
    special = tok.special_ids()
    # always HF tokenizers (no fast spec): an independent engine for outputs encoded by tiktoken
    encoder = tok.encoder()
    sep = special.eos if cfg.doc_separator == "eos" else None
    by_name = {x.name: x for x in inputs}
    by_base: dict[tuple[str, int], list[InputFile]] = {}
    for x in inputs:
        by_base.setdefault((Path(x.path).name, x.size), []).append(x)
    lengths = cfg.example_lengths
    for mf in m["files"]:
        fidx, name = int(mf["index"]), str(mf["name"])
        where = f"file {fidx} ({name})"
        chain = name
        if isinstance(mf.get("unit"), dict):  # a unit of a split Parquet file
            chain = f"{name} unit {mf['unit'].get('index')}"
            where = f"file {fidx} ({chain})"
        f = by_name.get(name)
        if f is None:
            cand = by_base.get((Path(name).name, int(mf["size"])), [])
            f = cand[0] if len(cand) == 1 else None
        if f is None:
            probs.add(f"{where}: not among the --source inputs")
            continue
        if f.size != int(mf["size"]):
            probs.add(f"{where}: {f.path} has {f.size:,} bytes, the manifest says {mf['size']:,}")
            continue
        try:
            # a unit of a split Parquet file is re-read as such (its row groups, its key)
            f = unit_from_entry(f, mf.get("unit"))
        except DenoiseError as err:
            probs.add(f"{where}: {err}")
            continue
        rep.source_files += 1
        sides = []
        for ds in checked:
            entry = next(x for x in ds.m["files"] if int(x["index"]) == fidx)
            shards = [ls for ls in ds.shards if ls.entry["source_files"] == [fidx]]
            sides.append(
                _EpochCheck(
                    ds,
                    entry,
                    Chunker(
                        plans,
                        cfg.mixture.probabilities,
                        int(ds.m["group_size"]),
                        int(ds.m["seed"]),
                        stream_key(f),
                        int(ds.m.get("epoch", 0)),
                    ),
                    RowCursor(shards, ds.ok_rows),
                    Regen(ds.spec, int(ds.m["seed"]), plans, special, lengths, probs),
                    FileChain(where=chain),
                )
            )
        stats = FileStats()
        tokens_read = reserved_replaced = 0
        try:
            for piece in token_stream(
                f,
                encoder,
                stats=stats,
                text_key=cfg.text_key,
                on_error="skip",
                separator=sep,
                max_doc_chars=cfg.max_doc_chars,
                stop_record=_stop_record(mf),
                select=_split_filter(m, cfg, stream_key(f)),
            ):
                reserved_replaced += piece.reserved_replaced
                tokens_read += len(piece.tokens)
                for side in sides:
                    probs.prefix = side.ds.prefix
                    for grp in side.chunker.push(piece.tokens):
                        side.regen.compare(grp, side.cursor, side.state)
            for side in sides:
                probs.prefix = side.ds.prefix
                last, side.tail = side.chunker.finish()
                if last is not None:
                    side.regen.compare(last, side.cursor, side.state)
        except DenoiseError as err:
            probs.prefix = ""
            probs.add(f"{where}: cannot re-read the source: {err}")
            continue
        rep.source_tokens += tokens_read
        for side in sides:
            probs.prefix = side.ds.prefix
            extra = side.cursor.take(1)
            if extra is not None and side.state.offset == 0:
                probs.add(
                    f"{side.cursor.names[int(extra[1][0])]} row {int(extra[2][0])}: {where} gives "
                    f"{side.state.rows:,} rows from the source, its shards hold more"
                )
            ef, tail = side.entry, side.tail
            if tail != int(ef["tail_tokens"]) or tokens_read - tail != int(ef["tokens_used"]):
                probs.add(
                    f"{where}: {tokens_read - tail:,} tokens used + {tail:,} tail from the source, "
                    f"the manifest says {ef['tokens_used']:,} + {ef['tail_tokens']:,}"
                )
        probs.prefix = ""
        _check_counts(where, mf, stats, tokens_read, reserved_replaced, probs)
    rep.checks += [
        c
        for c in (
            "--source: streams re-tokenized, every token accounted for",
            "rows regenerated bit for bit",
        )
        if c not in rep.checks
    ]


def _check_counts(
    where: str,
    mf: dict[str, Any],
    stats: FileStats,
    tokens_read: int,
    reserved_replaced: int,
    probs: Problems,
) -> None:
    """A source file's reading counters against its manifest entry."""
    if tokens_read != int(mf["tokens"]):
        probs.add(
            f"{where}: the source tokenizes to {tokens_read:,} tokens, the manifest says {mf['tokens']:,}"
        )
    ms = mf["stats"]
    for key in ("records", "docs"):
        if int(getattr(stats, key)) != int(ms[key]):
            probs.add(
                f"{where}: {getattr(stats, key):,} {key} in the source, the manifest says {ms[key]:,}"
            )
    skipped = dict(sorted(stats.skipped.items()))
    if skipped != dict(sorted(ms["skipped"].items())):
        probs.add(
            f"{where}: skipped records {skipped} in the source, the manifest says {ms['skipped']}"
        )
    if reserved_replaced != int(mf.get("reserved_replaced", 0)):
        probs.add(
            f"{where}: {reserved_replaced:,} reserved ids replaced in the source, the manifest "
            f"says {mf.get('reserved_replaced', 0):,}"
        )


class RowCursor:
    """A file's rows across its (logical) shards, handed out ``k`` at a time."""

    def __init__(self, shards: list[LogicalShard], ok_rows: dict[str, np.ndarray]) -> None:
        self.names = [ls.rel for ls in shards]
        self._ok = ok_rows
        self._it = self._gen(shards)
        self._buf: list[tuple[int, int, dict[str, np.ndarray]]] = []

    def _gen(self, shards: list[LogicalShard]) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        for si, ls in enumerate(shards):
            if not ls.exists():
                continue
            start = 0
            try:
                _, batches = ls.open()
                for rb in batches:
                    yield si, start, batch_arrays(rb)
                    start += rb.num_rows
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError, OutputError):
                continue  # reported by the row pass

    def take(
        self, k: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray] | None:
        """Up to ``k`` next rows: (columns, shard index of each row, row within its shard, whether
        the row passed the row checks)."""
        parts: list[tuple[int, int, dict[str, np.ndarray]]] = []
        got = 0
        while got < k:
            if not self._buf:
                nxt = next(self._it, None)
                if nxt is None:
                    break
                self._buf.append(nxt)
            si, start, a = self._buf[0]
            n = len(next(iter(a.values())))
            need = k - got
            if n <= need:
                parts.append(self._buf.pop(0))
                got += n
            else:
                parts.append((si, start, {c: v[:need] for c, v in a.items()}))
                self._buf[0] = (si, start + need, {c: v[need:] for c, v in a.items()})
                got += need
        if not parts:
            return None
        cols = {c: np.concatenate([p[2][c] for p in parts]) for c in parts[0][2]}
        sizes = [len(next(iter(p[2].values()))) for p in parts]
        shard = np.repeat(np.array([p[0] for p in parts]), sizes)
        row = np.concatenate([p[1] + np.arange(n) for p, n in zip(parts, sizes, strict=True)])
        passed = np.concatenate(
            [
                self._ok[self.names[p[0]]][p[1] : p[1] + n]
                if self.names[p[0]] in self._ok
                else np.zeros(n, dtype=bool)
                for p, n in zip(parts, sizes, strict=True)
            ]
        )
        if len(passed) != got:  # the row pass stopped early in that shard
            passed = np.zeros(got, dtype=bool)
        return cols, shard, row, passed


class Regen:
    """Compares the rows a source group regenerates with the shard rows, most specific first."""

    def __init__(
        self,
        spec: OutputSpec,
        seed: int,
        plans: tuple[ComponentPlan, ...],
        special: SpecialIds,
        lengths: Lengths,
        probs: Problems,
    ) -> None:
        self.spec, self.plans, self.special, self.lengths, self.probs = (
            spec,
            plans,
            special,
            lengths,
            probs,
        )
        self.seed = seed
        self.checker = RowChecker(spec)
        self.cols = [
            "input_ids",
            "labels",
            "attention_mask",
            *(["prefix_length"] if spec.layout == "decoder-only" else []),
            "input_length",
            "target_length",
            "example_index",
        ]

    def compare(self, grp: Group, cursor: RowCursor, st: FileChain) -> None:
        """``st.rows``: rows compared so far; ``st.offset`` set to 1 once the shards ran short."""
        if st.offset:
            return
        if self.spec.packed:
            self._compare_packed(grp, cursor, st)
            return
        spec, name = self.spec, st.where
        g = len(grp.starts)
        got = self._take(cursor, st, g, grp.index)
        if got is None:
            return
        a, shard_of, row_of, passed = got
        have = len(row_of)
        comps = grp.components[:have].astype(np.int64)
        starts = grp.starts[:have]
        exp_off = grp.token_offset[:have]
        first = grp.first_example
        ok = np.ones(have, dtype=bool)
        origin = f"(seed {self.seed}, file {name}, group {grp.index})"

        flag = self._flagger(cursor, shard_of, row_of, ok)
        cname = self._cname

        den = a["denoiser"].astype(np.int64)
        flag(
            den != comps,
            lambda r: (
                f"denoiser {cname(int(den[r]))}, but {origin} draws {cname(int(comps[r]))} for example {first + r}"
            ),
        )
        off = a["token_offset"]
        flag(
            off != exp_off,
            lambda r: (
                f"token_offset {off[r]}, the source stream puts example {first + r} at {exp_off[r]}"
            ),
        )
        for c in spec.comps:
            idx = np.flatnonzero(ok & passed & (comps == c.index))
            if not len(idx):
                continue
            flag(*self._chunk_mismatch(a, idx, c, grp.stream, starts[idx], exp_off, have, name))
        exp = group_rows(grp, self.plans, self.special, self.lengths, self.lengths, 0)
        assert isinstance(exp, Rows)
        want = {
            "input_ids": exp.input_ids,
            "labels": exp.labels,
            "attention_mask": exp.attention_mask,
            "input_length": exp.input_length,
            "target_length": exp.target_length,
            "prefix_length": exp.prefix_length,
            "example_index": first + np.arange(g),
        }
        for col in self.cols:
            w = want[col][:have]
            v = a[col]
            d = (v != w).reshape(have, -1)

            def desc2(
                r: int, d: np.ndarray = d, col: str = col, v: np.ndarray = v, w: np.ndarray = w
            ) -> str:
                j = first_col(d[r])
                at = "" if v.ndim == 1 else f"[{j}]"
                gv, wv = (v[r], w[r]) if v.ndim == 1 else (v[r, j], w[r, j])
                return (
                    f"not the row that {origin} gives: {col}{at} is {gv}, regenerated {wv} "
                    "(a row from another run?)"
                )

            flag(d.any(axis=1), desc2)

    def _take(self, cursor: RowCursor, st: FileChain, n: int, group: int) -> Any:
        """The next ``n`` shard rows for a regenerated group (fewer, or None, when the shards
        end early: reported once, and the file's comparison stops)."""
        got = cursor.take(n)
        have = 0 if got is None else len(got[1])
        if have < n:
            self.probs.add(
                f"file {st.where}: the source gives at least {st.rows + n:,} rows (group {group}), "
                f"its shards end after {st.rows + have:,}"
            )
            st.offset = 1
        st.rows += have
        return got

    def _flagger(
        self, cursor: RowCursor, shard_of: np.ndarray, row_of: np.ndarray, ok: np.ndarray
    ) -> Callable[[np.ndarray, Callable[[int], str]], None]:
        """Report rows where ``bad`` (and still ``ok``) as ``shard row R: ...``; clear ``ok``."""
        probs = self.probs

        def flag(bad: np.ndarray, describe: Callable[[int], str]) -> None:
            bad = bad & ok
            for r in np.flatnonzero(bad)[: probs.left]:
                probs.add(
                    f"{cursor.names[int(shard_of[r])]} row {int(row_of[r])}: {describe(int(r))}"
                )
            ok[bad] = False

        return flag

    def _cname(self, c: int) -> str:
        comps = self.spec.comps
        return comps[c].name if 0 <= c < len(comps) else str(c)

    def _chunk_mismatch(
        self,
        arrays: dict[str, np.ndarray],
        idx: np.ndarray,
        c: Any,
        stream: np.ndarray,
        chunk_starts: np.ndarray,
        exp_off: np.ndarray,
        n: int,
        name: str,
    ) -> tuple[np.ndarray, Callable[[int], str]]:
        """Examples ``idx`` (of ``n``, all of component ``c``) whose rebuilt raw chunk differs
        from the source stream at ``chunk_starts``, and a describer for the first difference."""
        chunks, _ = self.checker.rebuild(arrays, idx, c)
        src = stream[chunk_starts[:, None] + np.arange(c.raw)[None, :]]
        diff = chunks != src
        bad = np.zeros(n, dtype=bool)
        bad[idx] = diff.any(axis=1)
        pos = np.full(n, -1)
        pos[idx] = np.arange(len(idx))
        tok = self.spec.tok

        def desc(r: int) -> str:
            j = int(pos[r])
            col = first_col(diff[j])
            return (
                f"rebuilt tokens differ from the source at stream offset {int(exp_off[r]) + col:,} "
                f"(position {col} of the chunk): the row gives {tok(int(chunks[j, col]))}, "
                f"{name} gives {tok(int(src[j, col]))}"
            )

        return bad, desc

    def _compare_packed(self, grp: Group, cursor: RowCursor, st: FileChain) -> None:
        """Packed output: regenerate the group's examples, pack them again with
        ``prepare.worker.group_rows`` (a pure function of the group) and compare the packed rows bit for
        bit; the drawn components, offsets and rebuilt chunks are compared first, per example,
        for precise messages."""
        spec, probs, name = self.spec, self.probs, st.where
        g = len(grp.starts)
        first = grp.first_example
        packed = group_rows(
            grp, self.plans, self.special, self.lengths, spec.row_lengths, spec.max_segments
        )
        assert isinstance(packed, PackedRows)
        got = self._take(cursor, st, packed.num_rows, grp.index)
        if got is None:
            return
        a, shard_of, row_of, passed = got
        have = len(row_of)
        origin = f"(seed {self.seed}, file {name}, group {grp.index})"
        ok = np.ones(have, dtype=bool)

        flag = self._flagger(cursor, shard_of, row_of, ok)
        cname = self._cname

        # per example of the rows that passed the row checks: component, offset, rebuilt chunk
        rowid = np.flatnonzero(passed)
        v = unpacked_view({k: x[rowid] for k, x in a.items()}, spec)
        prow = rowid[v["packed_row"]]
        seg = v["segment"]
        e = v["example_index"].astype(np.int64) - first
        inside = (e >= 0) & (e < g)
        ec = np.where(inside, e, 0)
        comps = grp.components.astype(np.int64)[ec]
        den = v["denoiser"].astype(np.int64)
        off = v["token_offset"]
        exp_off = grp.token_offset[ec]
        bad = np.zeros(len(e), dtype=bool)

        def flag_ex(bad_e: np.ndarray, describe: Callable[[int], str]) -> None:
            bad_e = bad_e & ~bad & ok[prow]
            for i in np.flatnonzero(bad_e)[: probs.left]:
                r = int(prow[i])
                probs.add(
                    f"{cursor.names[int(shard_of[r])]} row {int(row_of[r])} segment "
                    f"{int(seg[i]) + 1}: {describe(int(i))}"
                )
            bad[bad_e] = True

        flag_ex(
            ~inside,
            lambda i: f"example_index {first + e[i]} is not in {origin} ({first}..{first + g - 1})",
        )
        flag_ex(
            den != comps,
            lambda i: (
                f"denoiser {cname(int(den[i]))}, but {origin} draws {cname(int(comps[i]))} for "
                f"example {first + e[i]}"
            ),
        )
        flag_ex(
            off != exp_off,
            lambda i: (
                f"token_offset {off[i]}, the source stream puts example {first + e[i]} at "
                f"{exp_off[i]}"
            ),
        )
        for c in spec.comps:
            idx = np.flatnonzero(~bad & (den == c.index))
            if not len(idx):
                continue
            flag_ex(
                *self._chunk_mismatch(
                    v, idx, c, grp.stream, grp.starts[ec[idx]], exp_off, len(e), name
                )
            )
        ok[prow[bad]] = False
        # the whole packed rows, bit for bit
        for col, w in packed.columns.items():
            w = w[:have]
            x = a[col]
            d = (x != w).reshape(have, -1)

            def desc2(
                r: int, d: np.ndarray = d, col: str = col, x: np.ndarray = x, w: np.ndarray = w
            ) -> str:
                j = first_col(d[r])
                at = "" if x.ndim == 1 else f"[{j}]"
                gv, wv = (x[r], w[r]) if x.ndim == 1 else (x[r, j], w[r, j])
                return (
                    f"not the row that {origin} gives: {col}{at} is {gv}, regenerated and "
                    f"packed {wv} (a row from another run?)"
                )

            flag(d.any(axis=1), desc2)


def _stop_record(mf: dict[str, Any]) -> int | None:
    """The record a file of a ``--limit-*`` run stopped before (None: read whole)."""
    v = mf.get("stop_record")
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise OutputError(f"denoise.json: file {mf.get('index')}: bad stop_record {v!r}")
    return v
