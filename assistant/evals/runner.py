"""Running an eval suite against one prompt version: every case through the real engine (the
version pinned, the response cache bypassed), checked, stored, compared with an earlier run.

Each case runs in a conversation of its own under the `eval` platform, so eval turns are
accounted like any other (tokens, cost, latency) and never mix with what users said. Retrieval
cases put their question to the knowledge search alone, over what such a conversation may
search (the collections bound globally) unless a case names its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from assistant import accounting
from assistant.builtin_tools import KNOWLEDGE_TOOL
from assistant.engine import Assistant
from assistant.evals import suite as evals
from assistant.evals.assertions import Observed
from assistant.evals.retrieval import (
    DEFAULT_DROP,
    KIND,
    RetrievalCase,
    RetrievalSummary,
    describe,
    dropped,
    score,
    summarize,
)
from assistant.knowledge.service import Knowledge
from assistant.llm import ChatMessage, ChatModel, ChatRequest, LlmError, complete
from assistant.prompts.bindings import Scope
from assistant.prompts.files import PromptFile
from assistant.records import JUDGE, CallRecord
from assistant.store import Store
from assistant.store.eval_store import FAKE_MODEL
from assistant.store.knowledge_store import Hit
from assistant.store.tables import EvalResult, EvalRun, Message
from assistant.tokens import TokenCounter
from assistant.tools import ToolRegistry
from assistant.turns import (
    Actor,
    Completed,
    ConversationRef,
    Failed,
    Inbound,
    TextDelta,
    ToolStarted,
)

log = logging.getLogger(__name__)


EVAL_ACTOR = Actor(platform="eval", user_id="runner", display_name="eval")
JUDGE_INSTRUCTIONS = (
    "You grade an assistant's answer against a rubric. Reply with JSON only: "
    '{"pass": true or false, "reason": "one short sentence"}.'
)
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    """A finished run and the run it was compared with (None when there was none), with the
    retrieval figures of both and why the suite's retrieval cases did not run, if they did not."""

    run: EvalRun
    results: list[EvalResult]
    compared: EvalRun | None = None
    retrieval: RetrievalSummary | None = None
    compared_retrieval: RetrievalSummary | None = None
    retrieval_drop: float = DEFAULT_DROP
    retrieval_skipped: str | None = None

    @property
    def regressed(self) -> bool:
        """Fewer cases pass than in the compared run, or its search finds less (by the suite's
        `retrieval_drop`)."""
        fewer = self.compared is not None and self.run.pass_rate < self.compared.pass_rate
        return fewer or bool(self.retrieval_drops)

    @property
    def retrieval_drops(self) -> list[str]:
        """Each retrieval figure that fell by `retrieval_drop` or more since the compared run."""
        if self.retrieval is None or self.compared_retrieval is None:
            return []
        return dropped(self.compared_retrieval, self.retrieval, by=self.retrieval_drop)

    @property
    def below_threshold(self) -> bool:
        """Cases below the threshold, or any tool case failing (tools are unit tests)."""
        return self.run.pass_rate < self.run.threshold or self.run.tool_passed < self.run.tool_cases

    def summary(self) -> str:
        """One line: the verdict, then the figures, then what it was compared with."""
        run = self.run
        parts = [*self._figures(), *self._comparison()]
        verdict = (
            "REGRESSION" if self.regressed else "BELOW THRESHOLD" if self.below_threshold else "ok"
        )
        return f"{run.prompt_name}@{run.version} {verdict}: " + ", ".join(parts)

    def _figures(self) -> list[str]:
        run = self.run
        passed, cases, what = run.passed, run.cases, "cases"
        if not run.cases and run.retrieval_cases:  # a suite of retrieval cases alone
            passed = sum(r.passed for r in self.results if r.kind == KIND)
            cases, what = run.retrieval_cases, "retrieval cases"
        parts = [f"pass rate {run.pass_rate:.0%} ({passed}/{cases} {what})"]
        parts.append(f"threshold {run.threshold:.0%}")
        if run.consistency is not None:
            parts.append(f"consistency {run.consistency:.0%}")
        if run.self_check_rate is not None:
            parts.append(f"few-shot self-check {run.self_check_rate:.0%}")
        if run.tool_cases:
            parts.append(f"tools {run.tool_passed}/{run.tool_cases}")
        if self.retrieval is not None:
            parts.append(f"retrieval {describe(self.retrieval)}")
        if self.retrieval_skipped:
            parts.append(self.retrieval_skipped)
        parts.append(f"cost ${run.cost_usd:.4f}" if run.cost_usd is not None else "cost unpriced")
        if run.failed_turns:
            parts.append(
                f"{run.failed_turns} turns failed (the model or a service, not the prompt): "
                "this run is not compared with others"
            )
        return parts

    def _comparison(self) -> list[str]:
        before = self.compared
        if before is None:
            return []
        versus = (
            f"vs {before.prompt_name}@{before.version} run #{before.id}: {before.pass_rate:.0%}"
        )
        if self.compared_retrieval is not None:
            versus += f", retrieval {describe(self.compared_retrieval)}"
        drops = self.retrieval_drops
        return [versus, "retrieval fell: " + ", ".join(drops)] if drops else [versus]


@dataclass(kw_only=True)
class _Tally:
    results: list[EvalResult] = field(default_factory=list)
    costs: list[float | None] = field(default_factory=list)
    done: int = 0
    version_id: int | None = None  # the stored version the run's calls are filed under


class EvalRunner:
    def __init__(
        self,
        *,
        assistant: Assistant,
        store: Store,
        model: ChatModel,
        tools: ToolRegistry,
        judge_model: str,
        concurrency: int = 4,
        tool_timeout: float = 15.0,
        fake: bool = False,
        knowledge: Knowledge | None = None,
    ) -> None:
        self._assistant = assistant
        self._store = store
        self._model = model
        self._tools = tools
        self._judge_model = judge_model
        self._limit = asyncio.Semaphore(concurrency)
        self._tool_timeout = tool_timeout
        self._fake = fake  # runs are recorded as the fake model's, compared only among those
        self._knowledge = knowledge  # what retrieval cases search; None: a suite has none

    async def version_in_use(self, name: str) -> int:
        """The version answering where nothing else is bound: bound globally, else latest."""
        bound = await self._store.prompts.binding(Scope(kind="global"))
        if bound is not None and bound.prompt == name and bound.version is not None:
            return bound.version
        return self._assistant.versions.catalog.latest(name).version.version

    async def baseline(self, name: str, compare: int | None = None) -> EvalRun | None:
        """The run to beat: the compared version's latest; by default the latest run of the
        version in use, which for the version in use itself is its previous run: drift."""
        version = compare if compare is not None else await self.version_in_use(name)
        return await self._store.evals.latest_run(name, version, fake=self._fake)

    async def run_and_compare(
        self, suite: evals.EvalSuite, version: int, *, compare: int | None = None, **options: Any
    ) -> RunOutcome:
        compared = await self.baseline(suite.prompt, compare)
        run = await self.run(suite, version, **options)
        assert run.id is not None
        results = await self._store.evals.results(run.id)
        before = None
        if compared is not None and compared.id is not None and compared.retrieval_cases:
            before = summarize(compared, await self._store.evals.results(compared.id))
        prompt = await self._assistant.versions.version(suite.prompt, version)
        return RunOutcome(
            run=run,
            results=results,
            compared=compared,
            retrieval=summarize(run, results),
            compared_retrieval=before,
            retrieval_drop=suite.retrieval_drop,
            retrieval_skipped=_skipped(suite, prompt) if prompt is not None else None,
        )

    async def run(
        self,
        suite: evals.EvalSuite,
        version: int,
        *,
        trigger: str = "cli",
        progress: Progress | None = None,
    ) -> EvalRun:
        """Run every case (k times for consistency), the self-check, the tool cases and the
        retrieval cases."""
        prompt = await self._assistant.versions.version(suite.prompt, version)
        if prompt is None:
            raise ValueError(f"there is no prompt version {suite.prompt}@{version}")
        row = await self._store.prompts.version(suite.prompt, version)
        checks = self._self_checks(suite, prompt)
        searches = self._retrieval_cases(suite, prompt)
        runs = suite.consistency_runs
        total = len(suite.cases) * runs + len(checks) + len(suite.tool_cases) + len(searches)
        tally, key = _Tally(version_id=row.id if row is not None else None), uuid.uuid4().hex[:12]

        def advance() -> None:
            tally.done += 1
            if progress is not None:
                progress(tally.done, total)

        async def limited(job: Awaitable[EvalResult]) -> EvalResult:
            async with self._limit:
                result = await job
            advance()
            return result

        def answer(kind: str, case: evals.EvalCase, attempt: int) -> Awaitable[EvalResult]:
            return limited(self._run_case(prompt, case, kind, attempt, key, tally))

        case_jobs = [answer("case", c, a) for c in suite.cases for a in range(1, runs + 1)]
        case_results = _held_to_agreement(suite, await asyncio.gather(*case_jobs))
        check_results = await asyncio.gather(*(answer("self_check", c, 1) for c in checks))
        tool_results = []
        for tool_case in suite.tool_cases:
            tool_results.append(await self._run_tool_case(tool_case))
            advance()
        found = await asyncio.gather(
            *(limited(self._run_retrieval_case(prompt, c, key, tally)) for c in searches)
        )
        run = self._summary(suite, prompt, trigger, case_results, check_results, tool_results)
        _add_retrieval(run, found, searches, has_others=bool(case_results or tool_results))
        run.cost_usd = _total(tally.costs)
        run.prompt_version_id = tally.version_id
        results = [*case_results, *check_results, *tool_results, *found]
        return await self._store.evals.save_run(run, results)

    def _retrieval_cases(
        self, suite: evals.EvalSuite, prompt: PromptFile
    ) -> tuple[RetrievalCase, ...]:
        """The suite's retrieval cases, when this version searches at all."""
        if not suite.retrieval or _skipped(suite, prompt) is not None:
            return ()
        if self._knowledge is None:
            raise ValueError(
                f"{suite.path} has retrieval cases, but this eval runner was built without "
                "knowledge search (EvalRunner(knowledge=…))"
            )
        return suite.retrieval

    async def _run_retrieval_case(
        self, prompt: PromptFile, case: RetrievalCase, key: str, tally: _Tally
    ) -> EvalResult:
        """One search, no model: what it found, scored, stored like a case's answer."""
        assert self._knowledge is not None
        ref = ConversationRef(
            platform="eval", workspace=key, channel=prompt.version.label, thread=case.name
        )
        calls: list[CallRecord] = []
        started = time.perf_counter()
        searched, problem, ranked = await self._search(ref, case, calls)
        elapsed = (time.perf_counter() - started) * 1000
        await self._file_calls(ref, calls, tally)
        scored = score(case, [(document, heading) for document, heading, _ in ranked])
        reasons = [problem] if problem else []
        if scored.missing:
            missing = ", ".join(str(source) for source in scored.missing)
            reasons.append(f"not in the top {case.k}: {missing}")
        return EvalResult(
            run_id=0,
            kind=KIND,
            case=case.name,
            passed=not reasons,
            failures="\n".join(reasons),
            answer="\n".join(
                f"{rank}. {label}" for rank, (_, _, label) in enumerate(ranked, start=1)
            ),
            cost_usd=_total([call.cost_usd for call in calls]),
            latency_ms=elapsed,
            recall=scored.recall,
            reciprocal_rank=scored.reciprocal_rank,
            collections=",".join(searched),
        )

    async def _search(
        self, ref: ConversationRef, case: RetrievalCase, calls: list[CallRecord]
    ) -> tuple[list[str], str | None, list[tuple[str, str, str]]]:
        """(the collections searched, what went wrong, the passages as (document, heading,
        label), best first). A collection that is missing is still named, so its figure
        falls to nothing instead of vanishing from the report."""
        assert self._knowledge is not None
        knowledge = self._knowledge
        if case.collections:
            named = [await knowledge.store.collection(name) for name in case.collections]
            found = [c for c in named if c is not None]
            gone = [n for n, c in zip(case.collections, named, strict=True) if c is None]
            searched = list(case.collections)
            problem = f"no collection named {', '.join(gone)}" if gone else None
        else:
            found = list(await knowledge.store.bound_to(ref))
            searched = [c.name for c in found]
            problem = None if found else "no collection is bound globally, and the case names none"
        if not found:
            return searched, problem, []
        try:
            outcome = await knowledge.search(
                case.query, collections=found, account=calls.append, limit=case.k
            )
        except Exception as exc:  # a broken index is what this case is here to find
            log.exception("retrieval case %s: the search failed", case.name)
            return searched, f"the search failed: {exc}", []
        return searched, problem, [(h.document, h.heading, _label(h)) for h in outcome.hits]

    async def _file_calls(
        self, ref: ConversationRef, calls: list[CallRecord], tally: _Tally
    ) -> None:
        """Embedding the query is a model call: accounted with the run's cost, and stored under
        an eval conversation so that reports count it as eval spend, not traffic."""
        tally.costs += [call.cost_usd for call in calls]
        if not calls:
            return
        conversation_id = await self._store.conversation_id(ref)
        await self._store.finish_turn(
            conversation_id, prompt_version_id=tally.version_id, reply=None, calls=calls
        )

    def _self_checks(self, suite: evals.EvalSuite, prompt: PromptFile) -> list[evals.EvalCase]:
        examples = [(e.user, e.assistant) for e in prompt.version.examples]
        wanted = suite.self_check if suite.self_check is not None else bool(examples)
        return evals.self_check_cases(examples) if wanted else []

    async def _run_case(
        self,
        prompt: PromptFile,
        case: evals.EvalCase,
        kind: str,
        attempt: int,
        key: str,
        tally: _Tally,
    ) -> EvalResult:
        observed = await self._observe(prompt, case, attempt, key)
        tally.costs.append(observed.cost_usd)
        outcomes = await evals.check(case, observed, judge=self._judge)
        return EvalResult(
            run_id=0,
            kind=kind,
            case=case.name,
            attempt=attempt,
            passed=evals.case_passed(outcomes),
            failures="\n".join(dict.fromkeys(o.reason for o in outcomes if not o.passed)),
            answer=observed.text,
            cost_usd=observed.cost_usd,
            latency_ms=observed.latency_ms,
        )

    async def _observe(
        self, prompt: PromptFile, case: evals.EvalCase, attempt: int, key: str
    ) -> Observed:
        """One turn through the real engine, in a conversation of its own."""
        ref = ConversationRef(
            platform="eval",
            workspace=key,
            channel=prompt.version.label,
            thread=f"{case.name}#{attempt}",
        )
        await self._seed(ref, case, prompt)
        inbound = Inbound(
            ref=ref,
            actor=EVAL_ACTOR,
            text=case.question,
            pinned_version=(prompt.version.name, prompt.version.version),
            use_cache=False,
            can_ask=False,  # nobody is there to approve an action: it is not run
        )
        text, calls = [], []
        async with aclosing(self._assistant.respond(inbound)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, ToolStarted):
                    calls.append((event.name, event.arguments))
                elif isinstance(event, Completed):
                    return Observed(
                        text=event.text,
                        tool_calls=tuple(calls),
                        cost_usd=event.usage.cost_usd,
                        latency_ms=event.total_ms,
                        sources=event.sources,
                    )
                elif isinstance(event, Failed):
                    broke = event.contract_error is not None
                    return Observed(
                        text="".join(text) or event.partial_text,
                        tool_calls=tuple(calls),
                        cost_usd=event.usage.cost_usd if event.usage else None,
                        latency_ms=0.0,
                        failed=None if broke else event.user_message,
                        contract_error=event.contract_error,
                    )
        raise RuntimeError("the turn ended without an answer")

    async def _seed(self, ref: ConversationRef, case: evals.EvalCase, prompt: PromptFile) -> None:
        """A conversation case: the turns before its last question, as stored history."""
        earlier = case.turns[:-1]
        if not earlier:
            return
        conversation_id = await self._store.conversation_id(ref)
        counter = TokenCounter(prompt.version.model or self._judge_model)
        for role, text in earlier:
            await self._store.add_message(
                Message(
                    conversation_id=conversation_id,
                    role=role,
                    author_id=EVAL_ACTOR.qualified_id,
                    author_name=EVAL_ACTOR.display_name if role == "user" else "",
                    text=text,
                    token_count=counter.count_message(text),
                )
            )

    async def _judge(self, rubric: str, question: str, answer: str) -> tuple[bool | None, str]:
        """Grade an answer against a rubric with the configured model. The call is accounted
        (purpose "judge"): an eval's judging costs money too, and counts toward budgets."""
        request = ChatRequest(
            model=self._judge_model,
            messages=[
                ChatMessage(role="system", content=JUDGE_INSTRUCTIONS),
                ChatMessage(
                    role="user",
                    content=f"Rubric: {rubric}\n\nQuestion: {question}\n\nAnswer: {answer}",
                ),
            ],
            params={"temperature": 0},
        )
        try:
            completion = await complete(self._model, request)
        except LlmError as exc:
            failed = accounting.failed_call(purpose=JUDGE, model=self._judge_model, error=exc)
            await self._assistant.record_calls([failed], surface="eval")
            return None, f"the judge could not be asked ({exc})"
        judged = accounting.completed_call(
            purpose=JUDGE,
            request=request,
            completion=completion,
            prices=self._assistant.prices,
            counter=TokenCounter(self._judge_model),
        )
        await self._assistant.record_calls([judged], surface="eval")
        try:
            verdict = json.loads(completion.text)
            return bool(verdict["pass"]), str(verdict.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            return None, f"the judge's verdict was not JSON: {completion.text[:200]!r}"

    async def _run_tool_case(self, case: evals.ToolCase) -> EvalResult:
        [result] = await self._tools.run_all(
            [("eval", case.tool, json.dumps(case.arguments))],
            allowed=[case.tool],
            time_limit=self._tool_timeout,
        )
        value, error = (result.content, None) if result.ok else (None, result.content)
        outcome = evals.check_tool_case(case, value, error)
        return EvalResult(
            run_id=0,
            kind="tool",
            case=f"{case.tool}({json.dumps(case.arguments, sort_keys=True)})",
            passed=outcome.passed,
            failures="" if outcome.passed else outcome.reason,
            answer=result.content,
        )

    def _summary(
        self,
        suite: evals.EvalSuite,
        prompt: PromptFile,
        trigger: str,
        cases: list[EvalResult],
        checks: list[EvalResult],
        tools: list[EvalResult],
    ) -> EvalRun:
        by_name = {case.name: case for case in suite.cases}
        answers = _answers_by_case(cases)
        verdicts: dict[str, bool] = {}  # a case passes when every attempt of it passes
        for result in cases:
            verdicts[result.case] = verdicts.get(result.case, True) and result.passed
        failed = len([r for r in [*cases, *checks] if r.failures.startswith(evals.FAILED_TURN)])
        consistency = None
        if suite.consistency_runs > 1 and answers:
            consistency = sum(evals.agreement(a) for a in answers.values()) / len(answers)
        return EvalRun(
            prompt_name=suite.prompt,
            version=prompt.version.version,
            model=FAKE_MODEL if self._fake else prompt.version.model or self._judge_model,
            trigger=trigger,
            cases=len(verdicts),
            passed=sum(verdicts.values()),
            pass_rate=_pass_rate(verdicts, by_name, tools),
            threshold=suite.threshold,
            consistency=consistency,
            self_check_rate=sum(r.passed for r in checks) / len(checks) if checks else None,
            tool_cases=len(tools),
            tool_passed=sum(r.passed for r in tools),
            failed_turns=failed,
        )


def _skipped(suite: evals.EvalSuite, prompt: PromptFile) -> str | None:
    """Why the suite's retrieval cases do not apply to this version: it cannot search."""
    if suite.retrieval and KNOWLEDGE_TOOL not in prompt.version.tools:
        return f"retrieval cases not run: {prompt.version.label} does not offer {KNOWLEDGE_TOOL}"
    return None


def _label(hit: Hit) -> str:
    """A passage as a retrieval result lists it: "product-docs: prompts.md > Evals"."""
    heading = f" > {hit.heading}" if hit.heading else ""
    return f"{hit.collection}: {hit.document}{heading}"


def _add_retrieval(
    run: EvalRun,
    found: list[EvalResult],
    cases: tuple[RetrievalCase, ...],
    *,
    has_others: bool,
) -> None:
    """The run's retrieval figures; a suite of retrieval cases alone is rated by the share
    that found every source they expect, as a suite of tool cases alone is by those."""
    if not found:
        return
    run.retrieval_cases = len(found)
    run.retrieval_recall = sum(r.recall or 0.0 for r in found) / len(found)
    run.retrieval_mrr = sum(r.reciprocal_rank or 0.0 for r in found) / len(found)
    ks = {case.k for case in cases}
    run.retrieval_k = ks.pop() if len(ks) == 1 else None
    if not has_others:
        run.pass_rate = sum(r.passed for r in found) / len(found)


def _held_to_agreement(suite: evals.EvalSuite, results: list[EvalResult]) -> list[EvalResult]:
    """Fail every attempt of a `consistent` case whose answers differ: no single answer is
    wrong, the disagreement is."""
    answers = _answers_by_case(results)
    why = {case.name: evals.disagreement(case, answers.get(case.name, [])) for case in suite.cases}
    for result in results:
        if why[result.case] is not None:
            result.passed = False
            result.failures = "\n".join(filter(None, [result.failures, why[result.case]]))
    return results


def _answers_by_case(results: list[EvalResult]) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}
    for result in results:
        answers.setdefault(result.case, []).append(result.answer)
    return answers


def _pass_rate(
    verdicts: dict[str, bool], by_name: dict[str, evals.EvalCase], tools: list[EvalResult]
) -> float:
    """Weighted over the cases; a suite of tool cases alone is rated by them."""
    if verdicts:
        return evals.weighted_pass_rate([(by_name[n], ok) for n, ok in verdicts.items()])
    return sum(r.passed for r in tools) / len(tools) if tools else 0.0


def _total(costs: list[float | None]) -> float | None:
    """A sum that is honest: unknown when any part is unpriced."""
    if any(cost is None for cost in costs):
        return None
    return sum(cost for cost in costs if cost is not None)
