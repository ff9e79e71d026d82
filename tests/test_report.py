"""``corpusfilter report``: real runs on inline Parquet corpora, the page's contents checked against
the manifest and the files, and the page rendered in headless Chromium as a person would see it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from corpusfilter.cli import main
from corpusfilter.recipe import load_recipe
from corpusfilter.report import parse_comparison, report, split_conjuncts, stable_hash, thresholds
from corpusfilter.runner import run

from .conftest import DOCS, TERMS, recipe_dict, tokens, write_shards

pytest.importorskip("matplotlib", reason="the report extra (matplotlib) is not installed")

HOSTILE = '<script>alert("x")</script><img src="http://example.com/t.png"> kindness, kindness & compassion'
CORPUS = [*DOCS, ("d8", HOSTILE, "web"), ("d9", "Kindness alone, nothing else here.", "fable")]
RECIPE_BLOCKS = [
    {"keywords": {"name": "moral", "terms": TERMS}},
    {"tag": {"where": "moral_hits >= 1 AND moral_score > 2.5", "label": "ai_risk"}},
    {"drop": {"where": "moral_hits >= 2", "reason": "moral"}},
]


def _run(inp: Path, out: Path, tasks: int = 1) -> dict[str, Any]:
    rec = load_recipe(recipe_dict(inp, out, blocks=RECIPE_BLOCKS, seed=7))
    run(rec, tasks=tasks, progress=False)
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("report")
    inp = write_shards(base / "in", CORPUS, n_shards=2)
    out = base / "out"
    manifest = _run(inp, out)
    res = report(out, samples=10)
    return {"base": base, "inp": inp, "out": out, "manifest": manifest, "res": res}


class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _table(page: str, first_header: str, second: str | None = None) -> list[list[str]]:
    """The first table whose header row starts with ``first_header`` (and ``second``)."""
    p = _Tables()
    p.feed(page)
    return next(
        t
        for t in p.tables
        if t and t[0] and t[0][0] == first_header and (second is None or t[0][1:2] == [second])
    )


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def test_funnel_sources_and_shares_equal_the_manifest_and_files(reported: dict[str, Any]) -> None:
    m, out = reported["manifest"], reported["out"]
    page = reported["res"].html.read_text()
    funnel = {r[0]: r for r in _table(page, "step")[1:]}
    assert _int(funnel["read"][3]) == m["accounting"]["read"] == len(CORPUS)
    for b in m["blocks"]:
        row = funnel[b["label"]]
        assert row[1] == b["config"]["type"]
        assert (_int(row[3]), _int(row[4])) == (b["stats"]["in"], b["stats"]["out"])
    assert funnel["2.drop"][5] == f"moral: {m['blocks'][2]['stats']['dropped']['moral']}"
    # Markdown has the same funnel.
    md = reported["res"].markdown.read_text()
    assert f"| 2.drop | drop@1 | moral_hits >= 2 | {len(CORPUS)} | {m['accounting']['kept']} | moral: " in md

    # Removal by source, recomputed from the Parquet files.
    kept = pl.read_parquet(out / "data").group_by("source").len()
    rej = pl.read_parquet(out / "rejected").group_by("source").len()
    want: dict[str, list[int]] = {}
    for s, n in kept.iter_rows():
        want.setdefault(s, [0, 0])[0] = n
    for s, n in rej.iter_rows():
        want.setdefault(s, [0, 0])[1] = n
    got = {r[0]: [_int(r[2]), _int(r[3])] for r in _table(page, "source")[1:]}
    assert got == want and "web" in got

    # Token shares: no tokens detector, so text bytes; before = all bytes read.
    shares = {r[0]: r for r in _table(page, "category")[1:]}
    assert _int(shares["(all)"][2]) == m["accounting"]["text_bytes"]
    all_rows = pl.concat([pl.read_parquet(out / "data"), pl.read_parquet(out / "rejected")], how="diagonal")
    tagged = all_rows.filter(pl.col("labels").list.contains("ai_risk"))
    assert _int(shares["ai_risk"][2]) == tagged["text"].str.len_bytes().sum() > 0
    assert _int(shares["moral"][4]) == 0 and _int(shares["moral"][6]) == m["accounting"]["rejected"]["moral"]


def test_thresholds_are_drawn_and_samples_escaped(reported: dict[str, Any]) -> None:
    page = reported["res"].html.read_text()
    ths = _table(page, "block")
    assert ["2.drop", "drop moral", "moral_hits >= 2", "moral_hits >= 2"] in ths
    assert ["1.tag", "tag ai_risk", "moral_score > 2.5", "moral_hits >= 1 AND moral_score > 2.5"] in ths
    # The hostile document was removed and is shown, escaped; nothing of it is live markup.
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<script" not in page.lower() and HOSTILE not in page
    # Every resource is an embedded PNG; no external URL anywhere in an attribute.
    attrs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert attrs and all(a.startswith(("data:image/png;base64,", "#")) for a in attrs)
    images = [a for a in attrs if a.startswith("data:")]
    assert len(images) >= 5  # funnel, sources, histograms (moral_hits, moral_score, ...), shares
    for uri in images:
        assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "default-src 'none'" in page
    # Borderline kept rows for `moral_hits >= 2`: every kept row (10 asked for), one-hit rows first.
    kept = pl.read_parquet(reported["out"] / "data")
    hits = dict(zip(kept["id"], kept["moral_hits"]))
    section = page.split('id="borderline"')[1]
    shown = re.findall(r"<b>(d\d+)</b>", section)
    assert sorted(shown) == sorted(hits) and [hits[i] for i in shown] == sorted(hits.values(), reverse=True)


def test_samples_are_deterministic_across_task_counts(reported: dict[str, Any]) -> None:
    base = reported["base"]
    out2 = base / "out_tasks2"
    _run(reported["inp"], out2, tasks=2)
    res = report(out2, out_dir=base / "rep2", samples=2)
    again = report(reported["out"], out_dir=base / "rep1", samples=10)
    # The same output gives the same page, byte for byte (plots included).
    assert again.html.read_bytes() == reported["res"].html.read_bytes()

    def removed_ids(p: Path) -> list[str]:
        section = p.read_text().split('id="removed"')[1].split('id="borderline"')[0]
        return re.findall(r"<b>(d\d+)</b>", section)

    ids = removed_ids(res.html)
    assert len(ids) == 2 and ids == removed_ids(again.html)[:2]
    # The two chosen are the rejected ids with the smallest stable hashes under the run's seed.
    rej = pl.read_parquet(reported["out"] / "rejected")["id"]
    keys = stable_hash(rej.to_arrow(), 7)
    assert ids == [rej[int(i)] for i in keys.argsort()[:2]]
    assert not (reported["out"] / "rep1").exists() and (base / "rep1" / "report.md").is_file()


def test_condition_parsing() -> None:
    assert split_conjuncts("a >= 3 AND (b < 2 OR c = 1) and d > .5") == [
        "a >= 3",
        "(b < 2 OR c = 1)",
        "d > .5",
    ]
    assert split_conjuncts("a > 1 OR b > 2") is None and split_conjuncts("NOT a > 1 AND b > 2") is None
    assert split_conjuncts("x IS NOT NULL AND x < 0.2") == ["x IS NOT NULL", "x < 0.2"]
    assert split_conjuncts("source <> 'x AND y' AND z >= 1e3") == ["source <> 'x AND y'", "z >= 1e3"]
    assert split_conjuncts("x BETWEEN 1 AND 2 AND y > 0") == ["x BETWEEN 1 AND 2", "y > 0"]
    assert parse_comparison("3 <= virtue_score") == ("virtue_score", ">=", 3.0)
    assert parse_comparison("(fasttext_pos > 0.9)") == ("fasttext_pos", ">", 0.9)
    assert parse_comparison("len(text) > 3") is None and parse_comparison("source = 'a'") is None
    m = {
        "blocks": [
            {
                "kind": "decision",
                "label": "0.drop",
                "config": {"type": "drop@1", "params": {"where": "a > 1 OR b <= -2", "reason": "r"}},
            },
            {
                "kind": "decision",
                "label": "1.keep",
                "config": {"type": "keep@1", "params": {"where": "c >= 0.5", "reason": "k"}},
            },
        ]
    }
    got = [(t.block, t.text, t.others) for t in thresholds(m)]
    assert got == [("0.drop", "a > 1", None), ("0.drop", "b <= -2", None), ("1.keep", "c >= 0.5", ())]


def test_errors_are_one_line(
    tmp_path: Path, reported: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "no manifest.json (not a finished corpusfilter output)" in capsys.readouterr().err
    bad = tmp_path / "bad"
    shutil.copytree(reported["out"], bad)
    (bad / "manifest.json").write_text("{not json")
    assert main(["report", str(bad)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    m = dict(reported["manifest"])
    del m["accounting"]
    (bad / "manifest.json").write_text(json.dumps(m))
    assert main(["report", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("corpusfilter: error: ") and "invalid manifest" in err and "accounting" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["report", str(reported["out"]), "--out", str(tmp_path / "r"), "--samples", "1"]) == 0
    assert "wrote " in capsys.readouterr().out and (tmp_path / "r" / "report.html").is_file()


def test_out_naming_a_file_is_one_line(
    tmp_path: Path, reported: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` where a file is (or under one), or a report file's name taken by a folder: an error
    naming the path, the file left alone."""
    taken = tmp_path / "taken.html"
    taken.write_text("mine")
    for dest, says in ((taken, "is a file, not a folder"), (taken / "sub", "cannot create it")):
        assert main(["report", str(reported["out"]), "--out", str(dest), "--samples", "1"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("corpusfilter: error: ") and f"report folder {dest}" in err and says in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert taken.read_text() == "mine"
    # the folder is fine but a report file's name is taken by a folder: one line naming that file
    blocked = tmp_path / "blocked"
    (blocked / "report.md").mkdir(parents=True)
    assert main(["report", str(reported["out"]), "--out", str(blocked), "--samples", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("corpusfilter: error: ") and f"cannot write {blocked / 'report.md'}" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _arm_corpus(folder: Path) -> Path:
    """60 documents from three sources; every 4th is moralizing, every 5th mentions an AI takeover."""
    docs = []
    for i in range(60):
        words = ["the", "cat", "sat", "on", "a", "mat"] * (2 + i % 7)
        if i % 4 == 0:
            words[3:3] = ["kindness", "compassion", "virtue"]
        if i % 5 == 0:
            words[1:1] = ["ai", "takeover"]
        docs.append((f"a{i:03d}", " ".join(words), ("web", "books", "forum")[i % 3]))
    return write_shards(folder, docs, n_shards=3)


ARM_BLOCKS = [
    {"tokens": {}},
    {"keywords": {"name": "moral", "terms": TERMS}},
    {"tag": {"where": "moral_hits >= 1", "label": "moral"}},
    {"drop": {"where": "moral_hits >= 3", "reason": "preachy"}},
]


def test_treatment_vs_control_side_by_side(tmp_path: Path) -> None:
    inp = _arm_corpus(tmp_path / "in")
    out = tmp_path / "treat"
    rec = load_recipe(
        recipe_dict(inp, out, blocks=ARM_BLOCKS, seed=1, control={"type": "matched", "by": ["source"]})
    )
    res = run(rec, progress=False)
    assert res.control is not None
    t, c = res.manifest, res.control.manifest
    assert t["experiment"]["arm"] == "treatment"
    page = report(out).html.read_text()
    table = _table(page, "", "treatment")
    assert table[0] == ["", "treatment", "control"]
    arms = {r[0]: r[1:] for r in table[1:]}
    assert arms["kept"] == [f"{t['accounting']['kept']:,}", f"{c['accounting']['kept']:,}"]
    assert arms["removed: preachy"] == [str(t["accounting"]["rejected"]["preachy"]), "0"]
    assert arms["removed: control_random"] == ["0", str(c["accounting"]["rejected"]["control_random"])]
    ov = c["experiment"]["overlap"]["removed_tokens_also_treated"]
    assert arms["control's picks also picked by the treatment"] == ["-", f"removed {100 * ov:.1f}% of tokens"]
    # Token shares come from the token column and agree with the runs' own token reports.
    assert arms["tokens read"] == [f"{t['tokens']['in']['tokens']:,}"] * 2
    assert arms["tokens kept"] == [f"{m['tokens']['out']['tokens']:,}" for m in (t, c)]
    share = [f"{100 * m['tokens']['categories']['moral']['share_out']:.2f}%" for m in (t, c)]
    assert arms["share of kept tokens: moral"] == share
    # From the control's side the arms keep their order; a missing counterpart is said, not hidden.
    ctrl_page = report(res.control.output).html.read_text()
    assert _table(ctrl_page, "", "treatment") == table
    shutil.rmtree(res.control.output)
    page = report(out, out_dir=tmp_path / "r2").html.read_text()
    assert f"counterpart {t['experiment']['counterpart']} not found" in page


def test_a_tag_and_a_reason_of_one_name_are_two_rows(tmp_path: Path) -> None:
    """A tag label that is also a drop reason (virtue_depleted.yaml: tag honesty, drop honesty): the
    removed share had shown the tag's share, in both arms."""
    inp = _arm_corpus(tmp_path / "in")
    out = tmp_path / "treat"
    blocks = [*ARM_BLOCKS[:3], {"drop": {"where": "moral_hits >= 3", "reason": "moral"}}]
    ctrl = {"type": "matched", "by": ["source"]}
    res = run(load_recipe(recipe_dict(inp, out, blocks=blocks, seed=1, control=ctrl)), progress=False)
    assert res.control is not None
    t = res.manifest
    arms = {r[0]: r[1:] for r in _table(report(out).html.read_text(), "", "treatment")[1:]}
    removed = pl.read_parquet(out / "rejected" / "*.parquet")
    assert set(removed["reject_reason"]) == {"moral"}
    assert arms["share of read tokens removed: moral"] == [
        f"{100 * tokens(removed) / t['tokens']['in']['tokens']:.2f}%",
        "-",
    ]
    tagged = f"{100 * t['tokens']['categories']['moral']['share_out']:.2f}%"
    assert arms["share of kept tokens: moral"][0] == tagged != arms["share of read tokens removed: moral"][0]


def test_unreadable_files_and_a_wrong_counterpart_are_said_not_tracebacks(tmp_path: Path) -> None:
    from corpusfilter.errors import CorpusfilterError

    inp = _arm_corpus(tmp_path / "in")
    out = tmp_path / "treat"
    ctrl = {"type": "matched", "by": ["source"]}
    res = run(load_recipe(recipe_dict(inp, out, blocks=ARM_BLOCKS, seed=1, control=ctrl)), progress=False)
    assert res.control is not None
    # the arms' folders swapped: each names the other as its counterpart, which is now itself
    (tmp_path / "treat").rename(tmp_path / "tmp")
    (tmp_path / "treat.control").rename(tmp_path / "treat")
    (tmp_path / "tmp").rename(tmp_path / "treat.control")
    page = report(out, out_dir=tmp_path / "r").html.read_text()
    assert "is not the treatment arm (its manifest says &#x27;control&#x27;)" in page
    # an arm relabelled in its manifest does not verify (the card and report would name it so)
    from corpusfilter.verify import verify

    ctrl = json.loads((out / "manifest.json").read_text())
    ctrl["experiment"]["arm"] = "treatment"
    (out / "manifest.json").write_text(json.dumps(ctrl))
    assert any(
        p.startswith("experiment.arm: 'treatment', but its blocks include") for p in verify(str(out)).problems
    )
    data = next((out / "data").glob("*.parquet"))
    data.write_bytes(data.read_bytes()[:40])
    with pytest.raises(CorpusfilterError, match=r"treat: cannot read its files \(.*\); `corpusfilter verify"):
        report(out, out_dir=tmp_path / "r2")


def test_an_upsample_label_is_a_category_in_both_arms(tmp_path: Path) -> None:
    """The upsampled category is the point of a pessimal corpus: its share shows for the treatment
    (labelled by the upsample block) as for the control (which carries the label as a tag)."""
    inp = _arm_corpus(tmp_path / "in")
    out = tmp_path / "up"
    up = {"upsample": {"where": "moral_hits >= 1", "weight": "3", "label": "pessimal"}}
    ctrl = {"type": "matched", "by": ["source"]}
    res = run(
        load_recipe(recipe_dict(inp, out, blocks=[*ARM_BLOCKS[:2], up], seed=1, control=ctrl)), progress=False
    )
    assert res.control is not None
    arms = {r[0]: r[1:] for r in _table(report(out).html.read_text(), "", "treatment")[1:]}
    share = [
        f"{100 * m['tokens']['categories']['pessimal']['share_out']:.2f}%"
        for m in (res.manifest, res.control.manifest)
    ]
    assert arms["share of kept tokens: pessimal"] == share and share[0] != share[1]


def test_upsampled_copies_are_not_counted_as_input(tmp_path: Path) -> None:
    inp = _arm_corpus(tmp_path / "in")
    out = tmp_path / "up"
    blocks = [*ARM_BLOCKS[:3], {"upsample": {"where": "moral_hits >= 1", "weight": "3"}}]
    res = run(load_recipe(recipe_dict(inp, out, blocks=blocks, seed=1)), progress=False)
    acc = res.accounting
    assert acc["added"] > 0
    page = report(out).html.read_text()
    overview = {r[0]: r[1] for r in _table(page, "", "documents")[1:]}
    assert overview["of which added copies (upsample, backfill)"] == str(acc["added"])
    by_source = {r[0]: (_int(r[1]), _int(r[2])) for r in _table(page, "source")[1:]}
    assert sum(read for read, _ in by_source.values()) == acc["read"] == 60
    assert sum(kept for _, kept in by_source.values()) == acc["kept"]
    assert 'id="experiment"' not in page
    # the score histograms are of scores: copy_index (0 on every original counted) is bookkeeping
    assert "histogram of moral_hits" in page and "histogram of copy_index" not in page


# -- the page as a person sees it: headless Chromium through chromedriver's WebDriver HTTP API ------
def _browser_binaries() -> tuple[str, str] | None:
    chrome = next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
    )
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


class Browser:
    """Headless Chromium driven by chromedriver over plain HTTP (the W3C WebDriver protocol)."""

    def __init__(self, width: int = 1200, height: int = 1600) -> None:
        found = _browser_binaries()
        if found is None:
            raise RuntimeError("chromium and chromedriver are not installed")
        self.chrome, driver = found
        self.size = (width, height)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.profile = tempfile.mkdtemp(prefix="cf-chromium-")
        self.sid = ""

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as f:
            return json.load(f)["value"]

    def __enter__(self) -> Browser:
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        args = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={self.profile}"]
        args.append(f"--window-size={self.size[0]},{self.size[1]}")
        caps = {
            "goog:chromeOptions": {"binary": self.chrome, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        self.sid = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.sid:
                self._call("DELETE", f"/session/{self.sid}")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, path: str | Path) -> None:
        self._call("POST", f"/session/{self.sid}/url", {"url": Path(path).resolve().as_uri()})

    def console(self) -> list[dict[str, Any]]:
        logs: list[dict[str, Any]] = self._call("POST", f"/session/{self.sid}/se/log", {"type": "browser"})
        return logs

    def script(self, js: str) -> Any:
        return self._call("POST", f"/session/{self.sid}/execute/sync", {"script": js, "args": []})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", f"/session/{self.sid}/screenshot"))

    def cdp(self, cmd: str, params: dict[str, Any]) -> Any:
        return self._call("POST", f"/session/{self.sid}/goog/cdp/execute", {"cmd": cmd, "params": params})


def _pixel_std(png: bytes) -> float:
    import numpy as np
    from PIL import Image  # a dependency of matplotlib

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(img.std())


@pytest.mark.skipif(
    _browser_binaries() is None,
    reason="headless Chromium not found: apt-get install chromium chromium-driver to render the report",
)
def test_report_renders_in_headless_chromium(reported: dict[str, Any], tmp_path: Path) -> None:
    # A control page first: the checks below must be able to fail.
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png"><script>console.error("boom")</script></body></html>'
    )
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    with Browser() as b:
        b.open(broken)
        errors = [e for e in b.console() if e["level"] in ("SEVERE", "WARNING")]
        assert len(errors) == 2, errors
        b.open(blank)
        assert _pixel_std(b.screenshot()) < 1.0

        b.open(reported["res"].html)
        logs = b.console()
        assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs
        assert b.script("return document.title").startswith("corpusfilter report")
        images = b.script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) >= 5 and all(done and w > 100 for done, w in images)
        # No element of the document text became markup.
        assert b.script("return document.scripts.length") == 0
        shot = b.screenshot()
        assert shot.startswith(b"\x89PNG") and _pixel_std(shot) > 10.0
        b.script("document.getElementById('scores').scrollIntoView()")
        assert _pixel_std(b.screenshot()) > 10.0
