"""Every broken journey in tests/corpus/ fails to load with exactly these located problems,
or (``lint_*.yaml``) loads and gets exactly these warnings from ``journey lint``.

Each entry is what a person sees in ``journey validate`` or ``lint``: line, column, path in
the document, what is wrong and what to do. A new corpus file needs an entry here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.definitions import load_journey
from engine.definitions.lint import lint
from engine.errors import DefinitionError

ROOT = Path(__file__).parents[3]
CORPUS = Path("tests/corpus")  # relative, as a person types it: messages name files this way

EXPECTED: dict[str, list[str]] = {
    'bad_duration': [
        "line 13, col 11, steps[0].wait: '3 days' is not a duration; write a duration such as 30s, 15m, 1h, 3d, 2w or 1d12h",
    ],
    'bad_reentry': [
        "line 11, col 18, entry.reentry: 'every 7 days' is not a re-entry rule; write never, always, or after a duration such as 'after 7d'",
    ],
    'bad_send_kind': [
        "line 13, col 54, steps[0].send.kind: unknown kind 'transactonal'. Did you mean 'transactional'? (allowed: marketing, transactional)",
        "line 18, col 13, steps[1].send.kind: unknown kind 'promotional' (allowed: marketing, transactional)",
    ],
    'bad_step_id': [
        "line 12, col 9, steps[0].id: 'Wait-1h' is not a valid id; use lower-case letters, digits and underscores, starting with a letter",
    ],
    'bad_time_of_day': [
        'line 13, col 19, steps[0].wait.until: \'9am\' is not a time of day; write 24-hour HH:MM in quotes, such as "09:00"',
    ],
    'bad_timeout': [
        'line 13, col 51, steps[0].wait_until.timeout: expected a duration such as 30s, 15m, 1h, 3d, 2w or 1d12h, got 24',
    ],
    'cel_bool_vs_string': [
        'line 14, col 31, steps[0].branch[0].when: type mismatch in "customer.vip == "true"": compares a boolean (customer.vip is true in the sample) with the string "true", so it is always false; write true without quotes',
    ],
    'cel_not_boolean': [
        'line 14, col 15, steps[0].branch[0].when: a condition must be true or false, but this gives int in "trigger.properties.cart_value * 2"',
    ],
    'cel_number_vs_list_item': [
        'line 14, col 48, steps[0].branch[0].when: type mismatch in "trigger.properties.cart_value in [\'100\', \'200\']": compares a number (trigger.properties.cart_value is 120 in the sample) with items of the list [\'100\', \'200\'], so it is always false; write [100, 200] instead',
    ],
    'cel_number_vs_string': [
        'line 14, col 47, steps[0].branch[0].when: type mismatch in "trigger.properties.cart_value > "100"": compares a number (trigger.properties.cart_value is 120 in the sample) with the string "100", so it is always false; write 100 without quotes',
    ],
    'cel_string_vs_number': [
        'line 14, col 32, steps[0].branch[0].when: type mismatch in "customer.tier != 2 && trigger.properties.order_id == trigger.properties.cart_value": compares a string (customer.tier is "silver" in the sample) with the number 2, so it is always true; write "2" in quotes',
        'line 14, col 65, steps[0].branch[0].when: type mismatch in "customer.tier != 2 && trigger.properties.order_id == trigger.properties.cart_value": compares a string (trigger.properties.order_id is "o-1" in the sample) with a number (trigger.properties.cart_value is 120 in the sample), so it is always false; convert one side with int(), double() or string(), or correct the sample',
    ],
    'cel_syntax': [
        'line 14, col 46, steps[0].branch[0].when: syntax error: mismatched input \'<EOF>\' in "trigger.properties.cart_value >"',
    ],
    'cel_type_error': [
        'line 14, col 49, steps[0].branch[0].when: type error: no operator or function \'_+_\' applied to \'(int, string)\' in "size(trigger.properties.order_id) + "items" > 2"',
    ],
    'cel_unknown_field': [
        'line 14, col 34, steps[0].branch[0].when: unknown field \'cart_valeu\' in "trigger.properties.cart_valeu >= 200". Did you mean \'cart_value\'? (trigger.properties has: cart_value, order_id; if the field is real, add it to sample.events)',
    ],
    'cel_unknown_variable': [
        'line 14, col 15, steps[0].branch[0].when: unknown variable \'trigge\' in "trigge.properties.cart_value > 100". Did you mean \'trigger\'? (variables: event, trigger, customer, context, now)',
    ],
    'duplicate_step_ids': [
        "line 14, col 9, steps[1].id: duplicate step id 'wait_1h' (first at steps[0], line 12); step ids must be unique",
    ],
    'duplicate_yaml_key': [
        "line 9, col 1, name: duplicate key 'name' (first at line 2); keep only one",
    ],
    'else_not_last': [
        "line 14, col 9, steps[0].branch[0]: 'else' must be the last item of a branch; the items after it never run",
    ],
    'empty': [
        'the file is empty; a journey needs id, name, stage, trigger and steps',
    ],
    'goto_nowhere': [
        "line 14, col 11, steps[0].goto: goto to nowhere: no step 'remindr'. Did you mean 'reminder'? (steps: wait_1h, reminder, end)",
    ],
    'jinja_syntax_file': [
        "line 13, col 38, steps[0].send.template: Jinja syntax error in tests/corpus/templates/broken_syntax.text.j2 line 3: unexpected '}'",
    ],
    'jinja_syntax_inline': [
        "line 17, col 13, steps[0].send.text: Jinja syntax error: Unexpected end of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
    ],
    'key_not_deep_enough': [
        "line 15, col 5, steps[0].timeout: unknown key 'timeout' in the step: move it into 'wait_until' (indent it under wait_until); it belongs to wait_until, not to the step",
    ],
    'key_too_deep': [
        "line 16, col 7, steps[0].wait_until.on_event: unknown key 'on_event' in wait_until: move it up one level, in line with 'wait_until'; it belongs to the step, not to wait_until",
    ],
    'many_problems': [
        'line 11, col 55, goal.when: unknown field \'order_idd\' in "event.properties.order_idd == trigger.properties.order_id" (event.properties has: nothing; if the field is real, add it to sample.events)',
        "line 14, col 11, steps[0].wait: '1 hour' is not a duration; write a duration such as 30s, 15m, 1h, 3d, 2w or 1d12h",
        "line 16, col 21, steps[1].send.channel: unknown channel 'emial'. Did you mean 'email'? (installed: email, sms, push, webhook, retargeting, log)",
        "line 19, col 17, steps[2].on_timeout: goto to nowhere: no step 'retaget'. Did you mean 'retarget'? (steps: wait_1h, reminder, bought, retarget, end)",
    ],
    'missing_keys': [
        "line 1, col 1, missing key 'name'",
        "line 1, col 1, missing key 'steps'",
    ],
    'negative_concurrency': [
        'line 11, col 21, entry.concurrent: must be 1 or more, got 0',
    ],
    'not_mapping': [
        'line 1, col 1, a journey file is a mapping (key: value lines); a journey needs id, name, stage, trigger and steps',
    ],
    'reserved_end': [
        "line 12, col 9, steps[0].id: 'end' is reserved (goto: end ends the journey); rename the step",
    ],
    'retargeting_missing_audience': [
        "line 13, col 11, steps[0].send: a retargeting send needs 'audience' (the audience's name)",
    ],
    'reward_points_text': [
        'line 13, col 22, steps[0].reward.points: points must be a number, but the expression "ten" gives string',
    ],
    'segment_without_condition': [
        "line 5, col 3, trigger: missing key 'when'",
    ],
    'sms_with_subject': [
        "line 13, col 26, steps[0].send.subject: sms messages have no 'subject' (they use: text); remove it",
    ],
    'split_negative': [
        'line 15, col 18, steps[0].split[1].weight: must be 0 or more, got -10',
    ],
    'split_not_100': [
        'line 14, col 7, steps[0].split: split weights add up to 60, not 100 (50, 10); make them total 100',
    ],
    'template_and_inline': [
        "line 13, col 11, steps[0].send: use either 'template' or inline parts (subject), not both",
    ],
    'template_missing_part': [
        "line 13, col 38, steps[0].send.template: template 'only_text' has no 'subject' part; add only_text.subject.j2 to tests/corpus/templates",
    ],
    'template_render_error': [
        "line 13, col 38, steps[0].send.template: template points_by_zero.text (tests/corpus/templates/points_by_zero.text.j2 line 3): ZeroDivisionError: integer division or modulo by zero (rendering the journey's sample)",
    ],
    'template_variable_absent': [
        "line 13, col 38, steps[0].send.template: template needs_last_name.text (tests/corpus/templates/needs_last_name.text.j2 line 1): no field 'last_name'. Did you mean 'first_name'? (has: email, first_name, id, phone, points, stage, timezone); add it to the journey's sample (sample.customer or sample.events) or fix the name",
    ],
    'trigger_kind': [
        "line 5, col 3, trigger: unknown key 'evnt'. Did you mean 'event'? (needs either 'event' or 'segment')",
    ],
    'two_kinds': [
        "line 12, col 5, steps[0]: a step does one thing: found 'send' and 'wait'; split them into separate items",
    ],
    'unknown_channel': [
        "line 13, col 21, steps[0].send.channel: unknown channel 'emial'. Did you mean 'email'? (installed: email, sms, push, webhook, retargeting, log)",
    ],
    'unknown_send_key': [
        "line 13, col 28, steps[0].send.templat: unknown key 'templat'. Did you mean 'template'? (allowed: channel, template, subject, title, text, html, body, url, audience, action, kind)",
    ],
    'unknown_stage': [
        "line 3, col 8, stage: unknown stage 'considration'. Did you mean 'consideration'? (allowed: awareness, consideration, purchase, retention, advocacy)",
    ],
    'unknown_step_kind': [
        "line 12, col 5, steps[0]: unknown key 'sned'. Did you mean 'send'? (a step needs exactly one of send, wait, wait_until, branch, split, update, reward, referral, exit)",
    ],
    'unknown_template': [
        "line 13, col 38, steps[0].send.template: unknown template 'greetng'. Did you mean 'greeting'? (in tests/corpus/templates: broken_syntax, greeting, needs_last_name, only_text, points_by_zero)",
    ],
    'unknown_top_key': [
        "line 1, col 1, missing key 'stage'",
        "line 3, col 1, stages: unknown key 'stages'. Did you mean 'stage'? (allowed: id, name, description, stage, trigger, entry, goal, exit_on, policy, sample, steps)",
    ],
    'webhook_no_url': [
        "line 13, col 11, steps[0].send: a webhook send needs 'url', where the body is posted",
    ],
    'yaml_colon_in_value': [
        'line 15, col 18, YAML syntax error: the value of \'subject\' contains \': \'; put it in quotes: subject: "Hi: your cart"\n       13 |     send:\n       14 |       channel: email\n    >  15 |       subject: Hi: your cart',
    ],
    'yaml_indentation': [
        "line 17, col 6, YAML indentation error: 'template' is indented 5 spaces, in line with no key above it; indent it 6 spaces to put it under 'send' with 'channel' (line 16), or 4 spaces to put it beside 'send' (line 15)\n       15 |     send:\n       16 |       channel: email\n    >  17 |      template: greeting",
    ],
    'yaml_indentation_list': [
        "line 14, col 4, YAML indentation error: this list item is indented 3 spaces, but the items before it are at 2 ('- id: wait_1h', line 12); indent every item of a list alike\n       12 |   - id: wait_1h\n       13 |     wait: 1h\n    >  14 |    - id: reminder",
    ],
    'yaml_indentation_too_deep': [
        "line 15, col 17, YAML indentation error: 'template' is indented more than 'channel' (line 14), so it reads as more of channel's value; indent it 6 spaces, like 'channel'\n       13 |     send:\n       14 |       channel: email\n    >  15 |         template: greeting",
    ],
    'yaml_list_item_for_key': [
        "line 11, col 1, YAML indentation error: a list item ('- ') where a key is expected; remove the '- ', or indent the item under the key whose list it is\n        9 |     checkout_started:\n       10 |       properties: {cart_value: 120, order_id: o-1}\n    >  11 | - steps:",
    ],
    'yaml_syntax': [
        "line 5, col 6, YAML syntax error: the '{' on line 4, col 10 is never closed; end it with '}' on that line\n        3 | stage: consideration\n        4 | trigger: {event: checkout_started\n    >   5 | steps:",
    ],
    'yaml_tab': [
        'line 13, col 1, YAML syntax error: a tab in the indentation; YAML indents with spaces only: replace the tab with spaces\n       11 | steps:\n       12 |   - id: wait_1h\n    >  13 | \twait: 1h',
    ],
}

WARNINGS: dict[str, list[str]] = {
    'lint_trait_without_has': [
        'line 7, col 9, trigger.when: "trigger.properties.coupon != "STAFF"" reads trigger.properties.coupon, which the sample gives as null (the event may come without it); then the condition fails and counts as false. Write (!has(trigger.properties.coupon) || trigger.properties.coupon != "STAFF") to let those without it through',
        'line 17, col 15, steps[0].branch[0].when: "customer.tier == "gold" && trigger.properties.cart_value > 100" reads customer.tier, which a customer may not have (a new one has only the traits the app sent); then the condition fails and counts as false. Write (has(customer.tier) && customer.tier == "gold"), or (!has(customer.tier) || customer.tier == "gold") to let those without it through',
    ],
}


@pytest.fixture(autouse=True)
def _in_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_the_corpus_has_at_least_thirty_files_and_each_has_expectations() -> None:
    names = sorted(p.stem for p in CORPUS.glob("*.yaml"))
    assert len(names) >= 30
    assert names == sorted(EXPECTED | WARNINGS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_journey_reports_located_problems(name: str) -> None:
    path = CORPUS / f"{name}.yaml"

    with pytest.raises(DefinitionError) as caught:
        load_journey(path)

    assert [str(problem) for problem in caught.value.problems] == EXPECTED[name]
    count = len(EXPECTED[name])
    header = f"{path} is invalid for {count} reason{'s' if count != 1 else ''}:"
    assert str(caught.value).splitlines()[0] == header


@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_journey_that_loads_gets_located_lint_warnings(name: str) -> None:
    journey = load_journey(CORPUS / f"{name}.yaml")

    assert [str(warning) for warning in lint(journey)] == WARNINGS[name]
