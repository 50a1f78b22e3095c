"""The lab framework without root: outcomes, judging, model changes, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from netlab import model
from netlab.labs import changes, registry, report
from netlab.labs.framework import (NOT_AS_EXPECTED, Expectation, Lab, Outcome, Variant,
                                   VariantResult, evaluate, expect)
from netlab.labs.runner import instance_name
from netlab.labs.sections import Step, Text, collapse

TINY = Path(__file__).resolve().parents[1] / "labs" / "tiny"


def _lab(*variants: Variant) -> Lab:
    return Lab("tiny-echo", "a tiny lab", TINY, variants, traffic=lambda ctx: {})


def _result(variant: Variant, evidence: dict, error: str | None = None) -> VariantResult:
    verdicts = evaluate(variant, evidence) if error is None else []
    return VariantResult("tiny-echo", variant.name, variant.summary, variant.outcome, "ti1n0",
                         1.0, verdicts, evidence, error)


CODE_7 = expect("refused", "curl exits 7", lambda ev: (ev["exit"] == 7, f"exit {ev['exit']}"))
BROKEN = Variant("broken", "closed port", Outcome("broken", "connection refused"), (CODE_7,))
REPRODUCED = Variant("bug", "the bug", Outcome("reproduced", "the SYN dies at the listener"),
                     (CODE_7,))


# -- outcomes and matching --------------------------------------------------------------


def test_outcome_knows_what_common_words_mean_for_the_user() -> None:
    assert Outcome("works", "").good and Outcome("fixed", "").good
    assert Outcome("reproduced", "").good is False and Outcome("broken", "").good is False
    assert Outcome("degraded", "slow", good=False).good is False
    with pytest.raises(ValueError, match="good for the user"):
        Outcome("degraded", "slow")


def test_observed_is_the_expected_outcome_only_when_every_expectation_held() -> None:
    held = _result(BROKEN, {"exit": 7})
    assert held.ok and held.observed.word == "broken" and held.observed.good is False
    assert held.observed.as_expected
    missed = _result(BROKEN, {"exit": 0})
    assert not missed.ok and missed.observed.word == NOT_AS_EXPECTED
    assert missed.observed.good is None
    assert "refused: expected curl exits 7, saw exit 0" in missed.observed.meaning
    crashed = _result(BROKEN, {}, error="KernelError: boom\ntraceback")
    assert not crashed.ok and "did not run to the end: KernelError: boom" in \
        crashed.observed.meaning
    assert not _result(Variant("v", "s", Outcome("works", ""), ()), {}).ok  # nothing judged


def test_missing_evidence_fails_instead_of_crashing() -> None:
    boom = Expectation("boom", "x", lambda ev: (ev["nope"]["deeper"], ""))
    (d,) = evaluate(Variant("v", "s", Outcome("works", ""), (boom,)), {})
    assert not d.held and "KeyError" in d.seen


def test_json_carries_expected_and_observed_outcomes() -> None:
    d = _result(BROKEN, {"exit": 7}).to_dict()
    json.dumps(d)
    assert d["ok"] is True
    assert d["expected"] == {"word": "broken", "meaning": "connection refused", "good": False}
    assert d["observed"]["word"] == "broken" and d["observed"]["as_expected"] is True
    assert d["verdicts"][0]["id"] == "refused"


# -- the report never says PASS in green over a failure for the user ---------------------


def _ansi(renderable: object) -> str:
    console = Console(record=True, force_terminal=True, color_system="standard", width=200)
    console.print(renderable)
    return console.export_text(styles=True)


def test_terminal_table_colours_outcomes_by_the_user_not_by_the_verdict() -> None:
    good = Variant("ok", "s", Outcome("works", "the echo answers"), (CODE_7,))
    text = _ansi(report.summary_table([_result(REPRODUCED, {"exit": 7}),
                                       _result(good, {"exit": 7})]))
    assert "PASS" not in text and "FAIL" not in text
    green, red = "\x1b[1;32m", "\x1b[1;31m"
    bug_row = next(line for line in text.splitlines() if "bug" in line)
    ok_row = next(line for line in text.splitlines() if " ok " in line)
    assert f"{red}reproduced" in bug_row and green not in bug_row  # as expected, still red
    assert f"{green}works" in ok_row
    assert "✔ as expected" in bug_row  # ... and "as expected" in neutral words


def test_markdown_and_html_never_say_pass_and_colour_by_the_user(tmp_path: Path) -> None:
    lab = _lab(REPRODUCED, BROKEN)
    results = [_result(REPRODUCED, {"exit": 7}), _result(BROKEN, {"exit": 0})]
    md = report.markdown(lab, results)
    page = report.html(lab, results)
    for text in (md, page):
        assert "PASS" not in text and "FAIL" not in text
    assert "| bug | 🔴 reproduced | 🔴 reproduced | ✔ as expected |" in md
    assert "| broken | 🔴 broken | 🟡 not as expected | ✘ not as expected |" in md
    assert "<span class='outcome bad'>reproduced</span>" in page
    assert "<span class='outcome good'>" not in page
    assert "<span class='outcome unknown'>not as expected</span>" in page
    assert "<td class='neutral'>✔ as expected</td>" in page


def test_reports_include_the_explain_text_and_cut_nothing(tmp_path: Path) -> None:
    long_seen = "x" * 3000
    v = Variant("bug", "s", Outcome("reproduced", "m"),
                (expect("long", "e", lambda ev: (True, long_seen)),))
    sections = (Text("rules", ("-A OUTPUT -j A", "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT"),
                     {"-o lo -j ACCEPT": "the deciding rule"}),)
    lab = Lab("tiny-echo", "t", TINY, (v,), traffic=lambda ctx: {},
              sections=lambda r: sections)
    res = [_result(v, {})]
    md, page = report.markdown(lab, res), report.html(lab, res)
    explain_first = lab.explain().splitlines()[0].lstrip("# ")
    assert long_seen in md and long_seen in page
    assert "## About this lab" in md and f"## {explain_first}" in md  # demoted one level
    assert f"<h2>{explain_first}</h2>" in page
    assert "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT   ◀ the deciding rule" in md
    assert "<mark>-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT</mark>" in page
    assert "<mark>-A OUTPUT -j A</mark>" not in page
    paths = report.write(str(tmp_path), lab, res)
    data = json.loads(Path(paths[2]).read_text())
    assert data["lab"] == "tiny-echo" and data["ok"] is True
    assert data["results"][0]["observed"]["word"] == "reproduced"


def test_html_is_self_contained() -> None:
    lab = registry.get("mirrord-ambient-steal")
    page = report.html(lab, [_result(REPRODUCED, {"exit": 7})])
    assert page.startswith("<!doctype html>")
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "src=" not in page and "<link" not in page


# -- variants are changes to the model ----------------------------------------------------


def test_changes_return_a_new_model_and_leave_the_base_alone() -> None:
    lab = registry.get("mirrord-ambient-steal")
    base = lab.topology()
    v = lab.variant("workaround-unlabel")
    changed = lab.model(v, base)
    target = next(d for d in changed.deployments if d.name == "target")
    assert target.labels["istio.io/dataplane-mode"] == "none"
    assert "istio.io/dataplane-mode" not in next(d for d in base.deployments
                                                 if d.name == "target").labels
    baseline = lab.model(lab.variant("baseline"), base)
    assert "istio.io/dataplane-mode" not in baseline.namespace("shop").labels
    assert base.namespace("shop").labels["istio.io/dataplane-mode"] == "ambient"
    assert lab.model(lab.variant("mirrord-3.112-1.23"), base).istio_version == "1.23"
    assert base.istio_version == "1.24+"
    assert lab.model(lab.variant("fix-3.113"), base) == base  # same model, own instance


def test_chained_changes_and_a_change_that_names_nothing() -> None:
    base = registry.get("mirrord-ambient-steal").topology()
    deny = model.Resource("AuthorizationPolicy", "shop", "deny", {"action": "DENY"})
    both = changes.chain(changes.istio("1.23"), changes.add(deny),
                         changes.service_target_port("shop", "target", 9080, 9999))(base)
    assert both.istio_version == "1.23" and both.resources[-1] is deny
    assert both.services[0].ports[0].target_port == 9999
    assert base.resources == [] and base.services[0].ports[0].target_port == "http"
    with pytest.raises(KeyError, match="no deployment 'shop/nope'"):
        changes.label_pods("shop", "nope", {"a": "b"})(base)


def test_instance_names_are_the_labs_and_unique() -> None:
    a, b = instance_name("mirrord-ambient-steal"), instance_name("mirrord-ambient-steal")
    assert a.startswith("mas") and a != b
    assert instance_name("tiny").startswith("ti")
    from netlab.plan import naming
    assert naming.valid_lab_name(a)


# -- sections ------------------------------------------------------------------------------


def test_collapse_counts_identical_steps() -> None:
    syn = Step("a", "b", "SYN")
    steps = collapse([syn, syn, Step("b", "a", "SYN-ACK"), syn])
    assert [s.count for s in steps] == [2, 1, 1]


def test_registry_finds_lab_folders() -> None:
    assert "mirrord-ambient-steal" in registry.names()
    lab = registry.get("mirrord-ambient-steal")
    assert [v.name for v in lab.variants][0] == "baseline" and len(lab.variants) == 7
    assert "route_localnet" in lab.explain()


# -- variants sharing one instance, figures ------------------------------------------------


def test_variants_sharing_an_instance_are_built_once_and_judged_each(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab.labs import runner

    built: list[str] = []
    torn: list[str] = []
    monkeypatch.setattr(runner.lifecycle, "up", lambda lab, progress=None: built.append(lab.name))
    monkeypatch.setattr(runner, "teardown", lambda name: torn.append(name))
    monkeypatch.setattr(runner, "Context", lambda name, variant, progress: name)

    def reads(version: str, n: int) -> Expectation:
        return expect(f"v{version}", f"version {version} sees {n}",
                      lambda ev: (ev["seen"][version] == n, str(ev["seen"][version])))

    old = Variant("old", "old reader", Outcome("reproduced", "empty"), (reads("1", 0),), shares_instance="run")
    new = Variant("new", "new reader", Outcome("fixed", "charted"), (reads("2", 5),), shares_instance="run")
    alone = Variant("alone", "own run", Outcome("works", "w"), (reads("2", 5),))
    runs: list[str] = []

    def traffic(instance: str) -> dict:
        runs.append(instance)
        return {"seen": {"1": 0, "2": 5}}

    lab = Lab("tiny-echo", "t", TINY, (old, alone, new), traffic=traffic)  # type: ignore[arg-type]
    results = runner.run(lab)
    assert len(built) == len(runs) == len(torn) == 2
    assert [r.variant for r in results] == ["old", "new", "alone"]
    r_old, r_new, r_alone = results
    assert r_old.instance == r_new.instance == built[0] and r_alone.instance == built[1]
    assert r_old.shared_with == ["new"] and r_new.shared_with == ["old"] and r_alone.shared_with == []
    assert r_old.ok and r_new.ok and r_alone.ok
    assert r_old.observed.word == "reproduced" and r_new.observed.word == "fixed"
    assert r_old.to_dict()["shared_with"] == ["new"]
    md = report.markdown(lab, results)
    assert f"instance `{built[0]}`, shared with new" in md
    # Run alone, a sharing variant gets its own instance.
    assert runner.run(lab, ["new"])[0].shared_with == []


def test_only_variants_reading_the_same_run_may_share_it() -> None:
    a = Variant("a", "s", Outcome("works", "w"), (CODE_7,), shares_instance="k")
    b = Variant("b", "s", Outcome("works", "w"), (CODE_7,), params={"x": 1}, shares_instance="k")
    with pytest.raises(ValueError, match="share instance 'k'"):
        Lab("tiny-echo", "t", TINY, (a, b), traffic=lambda ctx: {})
    c = Variant("c", "s", Outcome("works", "w"), (CODE_7,), changes.istio("1.23"), shares_instance="k")
    with pytest.raises(ValueError, match="differ in their change or params"):
        Lab("tiny-echo", "t", TINY, (a, c), traffic=lambda ctx: {})


def test_figures_embed_their_markup_in_html_and_their_text_in_markdown() -> None:
    from netlab.labs.sections import Figure

    fig = Figure("Edge panel, old and new", (("Kiali 1.89", "<svg class='x'><circle r='3'/></svg>"),
                                             ("Kiali 2.0", "<div class='chart'>tcp_sent</div>")),
                 ("1.89 tcp_sent: Not enough traffic to generate chart",), "look at tcp_sent",
                 ".chart{color:#123456}")
    lab = Lab("tiny-echo", "t", TINY, (REPRODUCED,), traffic=lambda ctx: {}, sections=lambda r: (fig,))
    res = [_result(REPRODUCED, {"exit": 7})]
    page, md = report.html(lab, res), report.markdown(lab, res)
    assert "<div class='side'><div><h4>Kiali 1.89</h4><svg class='x'><circle r='3'/></svg></div>" in page
    assert "<style>.chart{color:#123456}</style>" in page and "look at tcp_sent" in page
    assert "1.89 tcp_sent: Not enough traffic to generate chart" in page
    assert "<svg" not in md and "Pictures side by side in report.html: Kiali 1.89, Kiali 2.0." in md
    assert "1.89 tcp_sent: Not enough traffic to generate chart" in md


def test_warm_runs_beside_the_first_build_and_its_failure_is_not_the_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lab.warm loads what the traffic needs while the first instance builds; it is
    done when run() returns, and a warm-up that fails leaves the verdicts to the
    traffic (which meets the same cause itself)."""
    import threading

    from netlab.labs import runner

    monkeypatch.setattr(runner.lifecycle, "up", lambda lab, progress=None: None)
    monkeypatch.setattr(runner, "teardown", lambda name: None)
    monkeypatch.setattr(runner, "Context", lambda name, variant, progress: name)
    warmed: list[str] = []

    def warm() -> None:
        warmed.append(threading.current_thread().name)
        raise RuntimeError("no bcc here")

    lab = Lab("tiny-echo", "t", TINY, (BROKEN,), traffic=lambda ctx: {"exit": 7},  # type: ignore[arg-type]
              warm=warm)
    [res] = runner.run(lab)
    assert res.ok and res.error is None
    assert warmed == ["netlab-warm"]  # called once, off the main thread, and finished
