from __future__ import annotations

import pytest

from engine.errors import TemplateError
from engine.templates import TemplateEngine, TemplateStore, TemplateSyntaxProblem, UndefinedVariable


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine(max_output=1_000)


def test_renders_with_the_context(engine: TemplateEngine) -> None:
    template = engine.compile("Hi {{ customer.first_name }}", "greeting.text")

    assert template.render({"customer": {"first_name": "Ada"}}) == "Hi Ada"


def test_missing_field_is_an_error_naming_it_with_a_suggestion(engine: TemplateEngine) -> None:
    template = engine.compile("Hi {{ customer.first_nme }}", "greeting.text")

    with pytest.raises(UndefinedVariable) as caught:
        template.render({"customer": {"first_name": "Ada"}})

    assert str(caught.value) == "template greeting.text (line 1): no field 'first_nme'. Did you mean 'first_name'? (has: first_name)"


def test_a_render_error_names_the_file_and_the_line(engine: TemplateEngine) -> None:
    template = engine.compile("Hi {{ customer.first_name }},\n\n{{ customer.points // 0 }} points",
                              "points.text", file="journeys/templates/points.text.j2")

    with pytest.raises(TemplateError) as caught:
        template.render({"customer": {"first_name": "Ada", "points": 3}})

    assert str(caught.value) == (
        "template points.text (journeys/templates/points.text.j2 line 3): ZeroDivisionError: integer division or modulo by zero"
    )


def test_syntax_error_has_the_line(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateSyntaxProblem) as caught:
        engine.compile("line one\n{{ x }", "bad.text")

    assert caught.value.line == 2


def test_sandbox_blocks_internals(engine: TemplateEngine) -> None:
    template = engine.compile("{{ customer.__class__.__mro__ }}", "evil.text")

    with pytest.raises(TemplateError):
        template.render({"customer": {}})


def test_sandbox_is_immutable(engine: TemplateEngine) -> None:
    template = engine.compile("{{ items.append(1) }}", "evil.text")

    with pytest.raises(TemplateError):
        template.render({"items": []})


def test_output_size_is_capped(engine: TemplateEngine) -> None:
    template = engine.compile("{% for i in range(5000) %}xx{% endfor %}", "big.text")

    with pytest.raises(TemplateError, match="output exceeds 1000 characters"):
        template.render({})


def test_string_repetition_is_capped(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match="over the limit"):
        engine.compile("{{ 'x' * 100000000 }}", "big.text").render({})


def test_runaway_loop_is_stopped_by_its_step_budget(engine: TemplateEngine) -> None:
    template = engine.compile("{% for i in range(100000) %}{% for j in range(100000) %}{{ j.real }}{% endfor %}{% endfor %}", "slow")

    with pytest.raises(TemplateError, match=r"template slow \(line 1\): rendering took more than 100000 steps"):
        TemplateEngine(max_output=10**9).compile(template.source, "slow").render({})


def test_a_loop_that_looks_nothing_up_is_stopped_by_its_cpu_time() -> None:
    spinning = TemplateEngine(max_output=10**9, max_steps=10**9, max_cpu_seconds=0.2)
    template = spinning.compile("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "spin")

    with pytest.raises(TemplateError, match=r"template spin \(line 1\): rendering used more than 0.2s of CPU time"):
        template.render({})


def test_a_busy_machine_alone_never_fails_a_render(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a thread that is descheduled for a minute between any two of its steps...
    import time

    wall = [time.monotonic()]

    def a_minute_later() -> float:
        wall[0] += 60
        return wall[0]

    monkeypatch.setattr(time, "monotonic", a_minute_later)
    monkeypatch.setattr(time, "time", a_minute_later)
    template = TemplateEngine().compile("{% for item in items %}{{ item.name }} x{{ item.qty }}\n{% endfor %}", "cart")

    # ...a template of a few hundred lookups renders all the same.
    items = [{"name": f"item {i}", "qty": i} for i in range(200)]
    assert template.render({"items": items}).count("\n") == 200


def test_html_is_escaped_and_text_is_not(engine: TemplateEngine) -> None:
    context = {"name": "<b>Ada</b>"}

    assert engine.compile("{{ name }}", "x.html", "html").render(context) == "&lt;b&gt;Ada&lt;/b&gt;"
    assert engine.compile("{{ name }}", "x.text").render(context) == "<b>Ada</b>"


def test_json_body_must_be_valid_json(engine: TemplateEngine) -> None:
    assert engine.compile('{"n": {{ n | tojson }}}', "hook.body", "json").render({"n": "a\"b"}) == '{"n": "a\\"b"}'
    with pytest.raises(TemplateError, match="not valid JSON"):
        engine.compile('{"n": {{ n }}}', "hook.body", "json").render({"n": "a"})


def test_store_finds_parts_by_file_name(tmp_path) -> None:
    (tmp_path / "promo.subject.j2").write_text("s")
    (tmp_path / "promo.text.j2").write_text("t")
    (tmp_path / "notes.md").write_text("ignored")

    store = TemplateStore(tmp_path)

    assert store.names() == ["promo"]
    assert sorted(store.parts("promo")) == ["subject", "text"]


def test_render_budget_is_per_thread(engine: TemplateEngine) -> None:
    import threading

    slow = TemplateEngine(max_output=10**9)
    runaway = slow.compile("{% for i in range(100000) %}{% for j in range(100000) %}{{ j.real }}{% endfor %}{% endfor %}", "slow")
    quick = slow.compile("Hi {{ name }}", "quick")
    outcome: list[str] = []

    def render_quick_many() -> None:
        for _ in range(200):
            outcome.append(quick.render({"name": "Ada"}))

    worker = threading.Thread(target=render_quick_many)
    worker.start()
    with pytest.raises(TemplateError, match="more than 100000 steps"):
        runaway.render({})
    worker.join()

    assert outcome == ["Hi Ada"] * 200
