"""A report in words: the Markdown every surface can show, and the phrases (headline fields,
version lines) that richer renderings (Slack blocks, a Discord embed) arrange their own way."""

from __future__ import annotations

from collections.abc import Sequence

from assistant.reporting.figures import Percentiles, Period, Report, VersionFigures
from assistant.turns import ESTIMATE_MARK

_NOTE_LIMIT = 1000  # an unpriced note naming many models is cut to this
METHOD = "latency: nearest-rank percentiles of replies the model answered"


def unpriced_note(report: Report) -> str | None:
    """The warning every rendering shows when some calls could not be priced."""
    if not report.unpriced_calls:
        return None
    models = ", ".join(report.unpriced_models)
    note = f"{count(report.unpriced_calls, 'call')} unpriced ({models}): cost is a lower bound"
    return clip(note, _NOTE_LIMIT)


def left_out_note(report: Report) -> str:
    """What the figures do not count, in one line, so nobody reads test or eval traffic as
    production."""
    parts = left_out(report)
    return studied(report) + (f"; left out: {', '.join(parts)}" if parts else "")


def studied(report: Report) -> str:
    if report.fake:
        return "The bundled fake model's traffic only (--fake), not production"
    return "Production traffic only"


def left_out(report: Report) -> list[str]:
    """Each kind of traffic the figures leave out, when there was some."""
    parts = []
    if report.production_calls:
        parts.append(count(report.production_calls, "production call"))
    if report.eval_calls:
        parts.append(f"{count(report.eval_calls, 'eval-run call')} ({_eval_cost(report)})")
    if report.fake_calls:
        parts.append(f"{count(report.fake_calls, 'call')} answered by the bundled fake model")
    if report.fake_conversations:
        conversations = count(report.fake_conversations, "conversation")
        parts.append(f"{conversations} only the fake model answered")
    return parts


def report_text(report: Report) -> str:
    """Markdown for the terminal and chat commands: short lines in a few sections."""
    lines = [f"**Assistant report, {report.period.describe()}**"]
    parts = left_out(report)
    lines.append(studied(report) + ("; left out:" if parts else ""))
    lines += [f"- {part}" for part in parts]
    note = unpriced_note(report)
    if note:
        lines.append(f"⚠️ {note}")
    lines += ["", "**Traffic**", f"- {_traffic(report, ', ')}", f"- {_calls(report, ', ')}"]
    where = "answered by the fake model" if report.fake else "in production"
    evals = f"eval runs {_eval_cost(report)} (their judge's calls included)"
    lines += ["", "**Cost**", f"- {_cost(report)} {where}, {evals}"]
    lines += [f"  - {line}" for line in model_lines(report)]
    lines.append(f"- tokens: {_tokens(report, ', ')}")
    legend = estimate_note(report)
    if legend:
        lines.append(f"  - {legend}")
    budget = _budget(report)
    if budget:
        lines.append(f"- budget: {budget}")
    lines += ["", "**Reply latency** (nearest-rank percentiles)"]
    lines.append(f"- first token: {_latency(report.ttft_ms, ', ')}")
    lines.append(f"- total: {_latency(report.total_ms, ', ')}")
    lines += ["", "**Prompt versions**"]
    for version in report.by_version:
        lines += [f"- {version.label}: {version_traffic(version)}", f"  {quality(version)}"]
    if not report.by_version:
        lines.append("- no traffic")
    return "\n".join(lines)


def summary_fields(report: Report) -> list[tuple[str, str]]:
    """The headline figures, as (name, value) pairs: Slack fields, Discord inline fields."""
    pairs = [
        ("Traffic", _traffic(report, "\n")),
        ("Model calls", _calls(report, "\n")),
        ("Cost", _cost(report)),
        ("Eval runs", _eval_cost(report)),
        *([("Fake model", _fake(report))] if report.fake_calls else []),
        ("Tokens", _tokens_field(report)),
        ("First token", _latency(report.ttft_ms, "\n")),
        ("Reply time", _latency(report.total_ms, "\n")),
    ]
    budget = _budget(report)
    if budget:
        pairs.append(("Budget", budget))
    return pairs


def _traffic(report: Report, separator: str) -> str:
    return (
        count(report.conversations, "conversation") + separator + count(report.messages, "message")
    )


def _calls(report: Report, separator: str) -> str:
    errors = f"{count(report.errors, 'error')} ({report.error_rate:.1%})"
    return count(report.calls, "model call") + separator + errors + _fallbacks(report, separator)


def _fallbacks(report: Report, separator: str) -> str:
    """How often a version's fallback model answered because its own could not."""
    if not report.fallback_answers:
        return ""
    answered = sum(report.fallback_answers.values())
    models = ", ".join(f"{m} {n:,}" for m, n in sorted(report.fallback_answers.items()))
    return f"{separator}{count(answered, 'answer')} by fallback models ({models})"


def _fake(report: Report) -> str:
    return f"{count(report.fake_calls, 'call')} left out (--fake)"


def _cost(report: Report) -> str:
    return usd(report.cost_usd) + (" (lower bound)" if report.unpriced_calls else "")


def _eval_cost(report: Report) -> str:
    unpriced = report.eval_unpriced_calls
    return usd(report.eval_cost_usd) + (f" + {unpriced} unpriced" if unpriced else "")


def _tokens(report: Report, separator: str) -> str:
    """ "12,345 prompt (800 cached, ~3,200 estimated)", "900 completion (500 reasoning)": each
    total with the parts it holds; the part our tokenizer estimated is marked `~`."""
    prompt = _with_parts(
        f"{report.prompt_tokens:,} prompt",
        f"{report.cached_tokens:,} cached",
        _estimated_part(report.estimated_prompt_tokens),
    )
    completion = _with_parts(
        f"{report.completion_tokens:,} completion",
        f"{report.reasoning_tokens:,} reasoning" if report.reasoning_tokens else "",
        _estimated_part(report.estimated_completion_tokens),
    )
    return f"{prompt}{separator}{completion}"


def _tokens_field(report: Report) -> str:
    legend = estimate_note(report)
    tokens = _tokens(report, "\n")
    return f"{tokens}\n{legend}" if legend else tokens


def estimate_note(report: Report) -> str | None:
    """The legend of `~`, shown when some calls' tokens are our estimate, not the server's."""
    if not report.estimated_calls:
        return None
    calls = count(report.estimated_calls, "call")
    return f"{ESTIMATE_MARK} estimated by our tokenizer ({calls} without usage from the server)"


def _estimated_part(tokens: int) -> str:
    return f"{ESTIMATE_MARK}{tokens:,} estimated" if tokens else ""


def _with_parts(total: str, *parts: str) -> str:
    shown = [part for part in parts if part]
    return f"{total} ({', '.join(shown)})" if shown else total


def _latency(figures: Percentiles, separator: str) -> str:
    if figures.p50 is None:
        return "no replies"
    parts = [("p50", figures.p50), ("p95", figures.p95), ("p99", figures.p99)]
    return separator.join(f"{name} {_ms(value)}" for name, value in parts)


def _budget(report: Report) -> str | None:
    if report.budget_usd is None or report.budget_used is None:
        return None
    spent = report.budget_used * report.budget_usd
    return f"{usd(spent)} of {usd(report.budget_usd)} today ({report.budget_used:.0%})"


def model_lines(report: Report) -> list[str]:
    lines = [f"{model}: {usd(cost)}" for model, cost in report.cost_by_model.items()]
    kinds = purpose_line(report)
    return [*lines, kinds] if kinds else lines


def purpose_line(report: Report) -> str | None:
    """What the calls were for, when not all were replies: every call a turn makes (a summary
    fold, a contract repair, a search's embedding, a fallback) is in the cost, and said so."""
    kinds = sorted(report.by_purpose.items(), key=lambda item: (-item[1][1], item[0]))
    if all(purpose == "reply" for purpose, _ in kinds):
        return None
    return "by kind: " + ", ".join(
        f"{purpose} {usd(cost)} ({count(calls, 'call')})" for purpose, (calls, cost) in kinds
    )


def version_traffic(version: VersionFigures) -> str:
    cost = usd(version.cost_usd)
    if version.unpriced_calls:
        cost += f" + {version.unpriced_calls} unpriced"
    calls = count(version.calls, "call")
    if version.errors:
        calls += f" ({count(version.errors, 'error')}, {version.errors / version.calls:.1%})"
    return (
        f"{calls}, {cost}, {count(version.messages, 'reply')}, "
        f"👍 {version.thumbs_up} 👎 {version.thumbs_down}"
    )


def quality(version: VersionFigures) -> str:
    if version.eval_pass_rate is None:
        return "no eval run"
    quality = f"eval {_rate(version.eval_pass_rate, version.eval_pass_change)}"
    if version.consistency is not None:
        quality += f", consistency {_rate(version.consistency, version.consistency_change)}"
    searched = retrieval_quality(version)
    return f"{quality}; {searched}" if searched else quality


def retrieval_quality(version: VersionFigures) -> str | None:
    """ "retrieval recall@5 80% (-20 pts), MRR 0.70 (-0.30)", then each collection's figures
    when the cases searched several; None for a version with no retrieval run."""
    now, before = version.retrieval, version.retrieval_before
    if now is None:
        return None
    was = before.overall if before is not None else None
    recall = _rate(now.overall.recall, now.overall.recall - was.recall if was else None)
    text = f"retrieval {now.at} {recall}, MRR {_mrr(now.overall.mrr, was.mrr if was else None)}"
    if len(now.by_collection) > 1:
        parts = [f"{name} {f.recall:.0%}/{f.mrr:.2f}" for name, f in now.by_collection.items()]
        text += f" ({', '.join(parts)})"
    return text


def _mrr(value: float, before: float | None) -> str:
    """ "0.70 (-0.30)": a mean reciprocal rank and its change since the previous run."""
    if before is None:
        return f"{value:.2f}"
    change = value - before
    return f"{value:.2f} ({'±0' if round(change, 2) == 0 else f'{change:+.2f}'})"


def _rate(value: float, change: float | None) -> str:
    """ "92% (+4 pts)": a rate and its change since the previous eval run."""
    if change is None:
        return f"{value:.0%}"
    points = round(change * 100)
    return f"{value:.0%} ({'±0' if points == 0 else f'{points:+d}'} pts)"


def usd(amount: float) -> str:
    """Cents for dollars and more; four places below, where single calls live."""
    return f"${amount:,.2f}" if amount == 0 or abs(amount) >= 1 else f"${amount:.4f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def count(number: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number:,} {noun if number == 1 else plural}"


def span(period: Period) -> str:
    return f"{period.start:%Y-%m-%d %H:%M} to {period.end:%Y-%m-%d %H:%M} UTC"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit_lines(heading: str, lines: Sequence[str], limit: int) -> str:
    """`heading` and as many whole lines as fit in `limit`, then how many were left out."""
    reserve = 32  # "… and 1,000 more"
    text = heading
    for index, line in enumerate(lines):
        if len(text) + 1 + len(line) > limit - reserve:
            return f"{text}\n… and {len(lines) - index:,} more"
        text = f"{text}\n{line}"
    return clip(text, limit)
