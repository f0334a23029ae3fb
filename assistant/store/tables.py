"""The database tables. Every reply and every LLM call can be traced to its prompt version."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from assistant.records import SERVER_TOKENS

LARGEST_ID = 2**31 - 1  # ids are INTEGER: 32 bits, signed, on Postgres


def utcnow() -> datetime:
    return datetime.now(UTC)


class Conversation(SQLModel, table=True):
    """One thread of talk, keyed by where it happens; holds the rolling summary of folded turns."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("platform", "workspace", "channel", "thread", name="uq_conversation_ref"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    workspace: str = Field(max_length=128)
    channel: str = Field(max_length=128)
    thread: str = Field(max_length=128)
    summary: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    summary_tokens: int = 0
    summary_through_id: int = Field(default=0, description="last message folded into summary")
    created_at: datetime = Field(default_factory=utcnow)


class PromptVersionRow(SQLModel, table=True):
    """A released prompt version; immutable once stored (the content hash guards it)."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_prompt_name_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    version: int
    content_hash: str = Field(max_length=64)
    source_file: str = Field(max_length=512)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    """A user or assistant message; its token count is stored, so trimming never re-counts."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_created_at", "created_at"),  # a report's period
        Index("ix_messages_author_id_created_at", "author_id", "created_at"),  # rate limits
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id")
    role: str = Field(max_length=16)
    author_id: str = Field(default="", max_length=128)
    author_name: str = Field(default="", max_length=128)
    text: str = Field(sa_column=Column(Text, nullable=False))
    token_count: int
    status: str = Field(default="ok", max_length=16, description="ok | incomplete")
    prompt_version_id: int | None = Field(default=None, foreign_key="prompt_versions.id")
    platform_message_id: str | None = Field(default=None, max_length=128, index=True)
    # the files sent with a user message and what the model could see of each (JSON list)
    attachments: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class LlmCall(SQLModel, table=True):
    """One request to the model: what it cost, how long it took, how it ended."""

    __tablename__ = "llm_calls"
    __table_args__ = (
        # the fake model's calls in a report's period (which conversations were only its)
        Index("ix_llm_calls_model_created_at", "model", "created_at"),
        # `prompt show`: a version's replies, violations and cache hits from the index alone
        Index(
            "ix_llm_calls_version_usage",
            "prompt_version_id",
            "purpose",
            "cache_hit",
            "contract_error",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int | None = Field(default=None, foreign_key="conversations.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="messages.id")
    prompt_version_id: int | None = Field(default=None, foreign_key="prompt_versions.id")
    purpose: str = Field(max_length=16, description="reply | summary")
    model: str = Field(max_length=128)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = Field(
        default=0,
        sa_column_kwargs={"server_default": "0"},
        description="a part of completion_tokens, billed as output",
    )
    token_source: str = Field(
        default=SERVER_TOKENS,
        max_length=32,
        sa_column_kwargs={"server_default": SERVER_TOKENS},
        description="server | none | estimate:<tokenizer> (the server sent no usage)",
    )
    fallback_for: str | None = Field(
        default=None,
        max_length=128,
        description="the prompt version's own model, when one of its fallbacks made this call",
    )
    cost_usd: float | None = Field(default=None, description="NULL when the model is unpriced")
    ttft_ms: float | None = None
    total_ms: float
    status: str = Field(max_length=16, description="ok | error")
    error_class: str | None = Field(default=None, max_length=64)
    cache_hit: bool = Field(default=False, description="answered from the response cache")
    contract_error: str | None = Field(
        default=None, max_length=500, description="why the reply broke the version's schema"
    )
    created_at: datetime = Field(default_factory=utcnow, index=True)


class ProcessedEvent(SQLModel, table=True):
    """A platform event already handled; the primary key makes the claim atomic across replicas."""

    __tablename__ = "processed_events"

    key: str = Field(primary_key=True, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class PromptBinding(SQLModel, table=True):
    """Which prompt answers in a scope: one version, or an A/B split of versions by weight."""

    __tablename__ = "prompt_bindings"
    __table_args__ = (
        UniqueConstraint("scope", "platform", "workspace", "channel", name="uq_binding_scope"),
    )

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16, description="global | workspace | channel")
    platform: str = Field(default="", max_length=32)
    workspace: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=128)
    prompt_name: str = Field(max_length=64)
    version: int | None = Field(default=None, description="NULL when split is set")
    split: str | None = Field(default=None, max_length=512, description="JSON [[2, 90], [3, 10]]")
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(max_length=160)


class PromptAudit(SQLModel, table=True):
    """Every change of a binding: who, from which surface, where, from what, to what, when."""

    __tablename__ = "prompt_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=160)
    surface: str = Field(max_length=32)
    action: str = Field(max_length=16, description="use | ab | rollback")
    prompt_name: str = Field(max_length=64, index=True)
    scope: str = Field(max_length=16)
    platform: str = Field(default="", max_length=32)
    workspace: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=128)
    before: str | None = Field(default=None, max_length=600, description="binding JSON or NULL")
    after: str | None = Field(default=None, max_length=600, description="binding JSON or NULL")
    forced: bool = False
    undone_by: int | None = Field(default=None, description="the rollback that undid this change")


class PromptAssignment(SQLModel, table=True):
    """The version an A/B split gave a conversation: sticky, so it never moves mid-talk."""

    __tablename__ = "prompt_assignments"

    conversation_id: int = Field(foreign_key="conversations.id", primary_key=True)
    prompt_name: str = Field(max_length=64, primary_key=True)
    version: int
    created_at: datetime = Field(default_factory=utcnow)


class CachedResponse(SQLModel, table=True):
    """A reply to reuse when the same version meets the very same context again."""

    __tablename__ = "response_cache"

    key: str = Field(primary_key=True, max_length=64)
    prompt_version_id: int = Field(foreign_key="prompt_versions.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Feedback(SQLModel, table=True):
    """A user's vote on an answer, kept with the answer's prompt version so quality per version
    can be counted; one row per user and message, so a changed mind replaces the vote."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("message_id", "user_id", name="uq_feedback_message_user"),
        Index("ix_feedback_updated_at", "updated_at"),  # votes cast or changed in a period
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="messages.id", index=True)
    prompt_version_id: int | None = Field(
        default=None, foreign_key="prompt_versions.id", index=True
    )
    user_id: str = Field(max_length=160, description="platform:user_id")
    vote: int = Field(description="+1 or -1")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class EvalRun(SQLModel, table=True):
    """One run of a prompt version's eval suite on one model: its figures, kept for
    comparison (the `prompt use` gate, drift alerts, reports)."""

    __tablename__ = "eval_runs"
    __table_args__ = (Index("ix_eval_runs_version_finished", "prompt_name", "version", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    prompt_name: str = Field(max_length=64)
    version: int
    prompt_version_id: int | None = Field(default=None, foreign_key="prompt_versions.id")
    model: str = Field(max_length=128)
    trigger: str = Field(default="cli", max_length=32, description="cli | schedule | chat")
    cases: int = 0
    passed: int = 0
    pass_rate: float = Field(default=0.0, description="weighted, 0..1")
    threshold: float = 1.0
    consistency: float | None = Field(default=None, description="mean agreement, 0..1")
    self_check_rate: float | None = None
    tool_cases: int = 0
    tool_passed: int = 0
    failed_turns: int = Field(default=0, description="turns that failed: not compared if > 0")
    cost_usd: float | None = Field(default=None, description="NULL when any call was unpriced")
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    retrieval_cases: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    retrieval_recall: float | None = Field(default=None, description="mean recall@k, 0..1")
    retrieval_mrr: float | None = Field(default=None, description="mean reciprocal rank, 0..1")
    retrieval_k: int | None = Field(default=None, description="NULL when the cases' k differ")


class EvalResult(SQLModel, table=True):
    """One case of a run: whether it passed, why not, what it answered, cost and latency."""

    __tablename__ = "eval_results"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="eval_runs.id", index=True)
    kind: str = Field(max_length=16, description="case | self_check | tool | retrieval")
    case: str = Field(max_length=128)
    attempt: int = 1
    passed: bool
    failures: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    answer: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    cost_usd: float | None = None
    latency_ms: float | None = None
    recall: float | None = Field(default=None, description="retrieval: expected found in top k")
    reciprocal_rank: float | None = Field(default=None, description="retrieval: 1/first rank")
    collections: str = Field(
        default="",
        sa_column=Column(Text, nullable=False, server_default=""),
        description="retrieval: the collections searched, comma-separated",
    )


class JobRun(SQLModel, table=True):
    """When a scheduled job last ran: a restart runs a missed job once, not once per miss."""

    __tablename__ = "job_runs"

    name: str = Field(primary_key=True, max_length=64)
    last_run_at: datetime
    status: str = Field(default="ok", max_length=16, description="ok | error | baseline")
    error: str | None = Field(default=None, max_length=500)


class OpenTurn(SQLModel, table=True):
    """An answer the assistant owes: written with the user's message and the dedupe claim,
    deleted with the reply. A row left behind is a turn a stopped process cut short."""

    __tablename__ = "open_turns"

    message_id: int = Field(primary_key=True, foreign_key="messages.id")
    surface: str = Field(max_length=16)
    place: str = Field(sa_column=Column(Text, nullable=False), description="where to answer")
    shown: str | None = Field(default=None, max_length=128, description="the cut answer's id")
    reply_id: int | None = Field(default=None, description="the answer, once stored")
    owner: str = Field(max_length=64, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class Worker(SQLModel, table=True):
    """A serving process and when it last said it was alive; the open turns of one that went
    silent are taken over by another."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=64)
    seen_at: datetime = Field(default_factory=utcnow)


class KnowledgeCollection(SQLModel, table=True):
    """A folder of the team's documents the assistant may search: from `knowledge.yaml` or
    `assistant knowledge add`. `embedding_model` names the model its stored vectors came from:
    a change of model re-embeds everything, since vectors of two models never compare."""

    __tablename__ = "knowledge_collections"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    path: str = Field(max_length=1024, description="the folder, as given")
    link: str | None = Field(
        default=None, max_length=512, description="where its documents can be read: base URL"
    )
    description: str = Field(default="", max_length=500)
    origin: str = Field(default="cli", max_length=16, description="file | cli")
    embedding_model: str | None = Field(default=None, max_length=128)
    dimensions: int | None = None
    synced_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class KnowledgeDocument(SQLModel, table=True):
    """One file of a collection as last synced; its hash says whether it changed since."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (UniqueConstraint("collection_id", "path", name="uq_knowledge_document"),)

    id: int | None = Field(default=None, primary_key=True)
    collection_id: int = Field(foreign_key="knowledge_collections.id", index=True)
    path: str = Field(max_length=1024, description="inside the collection's folder")
    title: str = Field(max_length=300)
    content_hash: str = Field(max_length=64)
    synced_at: datetime = Field(default_factory=utcnow)
    # kept here so a collection's figures are a sum over its documents, not a count of its
    # passages (what `bound_to` reads on every search)
    chunks: int = Field(default=0, description="its passages")
    embedded: int = Field(default=0, description="its passages with a vector")


class KnowledgeChunk(SQLModel, table=True):
    """A passage of a document, cut along its headings and paragraphs. Its hash lets a re-sync
    embed only what changed; `embedding` holds the vector (float32, little-endian) the search
    index is built from, so the index can always be rebuilt without asking the model again."""

    __tablename__ = "knowledge_chunks"
    __table_args__ = (
        Index("ix_knowledge_chunks_collection_hash", "collection_id", "content_hash"),
        # ids never reused: a vector row a process without sqlite-vec could not delete can
        # only ever be an orphan (searches join it away), never another passage's vector
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    collection_id: int = Field(foreign_key="knowledge_collections.id")
    document_id: int = Field(foreign_key="knowledge_documents.id", index=True)
    position: int = Field(description="the chunk's order in its document")
    heading: str = Field(default="", max_length=500, description="outermost first, ' > '")
    anchor: str = Field(default="", max_length=200, description="the section's #fragment")
    text: str = Field(sa_column=Column(Text, nullable=False))
    token_count: int
    content_hash: str = Field(max_length=64)
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class KnowledgeBinding(SQLModel, table=True):
    """A collection a scope may search. A conversation searches the collections bound to its
    channel, its workspace and globally, and nothing else."""

    __tablename__ = "knowledge_bindings"
    __table_args__ = (
        UniqueConstraint(
            "collection_id", "scope", "platform", "workspace", "channel", name="uq_knowledge_bind"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    collection_id: int = Field(foreign_key="knowledge_collections.id", index=True)
    scope: str = Field(max_length=16, description="global | workspace | channel")
    platform: str = Field(default="", max_length=32)
    workspace: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=128)
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(max_length=160)


class KnowledgeAudit(SQLModel, table=True):
    """Every change to what the assistant may read: added, removed, bound, dropped."""

    __tablename__ = "knowledge_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=160)
    surface: str = Field(max_length=32)
    action: str = Field(max_length=16, description="add | remove | use | drop")
    collection: str = Field(max_length=64, index=True)
    scope: str = Field(default="", max_length=16)
    platform: str = Field(default="", max_length=32)
    workspace: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=128)


class MessageSource(SQLModel, table=True):
    """A source an answer cited, kept with the answer: a later re-sync or removal of the
    collection never rewrites where an old answer said it came from."""

    __tablename__ = "message_sources"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="messages.id", index=True)
    number: int
    collection: str = Field(max_length=64)
    document: str = Field(max_length=1024)
    title: str = Field(max_length=300)
    heading: str = Field(default="", max_length=500)
    link: str | None = Field(default=None, max_length=2048)


class ToolApproval(SQLModel, table=True):
    """A call of a tool that acts on a user's behalf, and their decision: asked, then
    approved, declined or expired. Only the requester may decide; the row is the record."""

    __tablename__ = "tool_approvals"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="messages.id", index=True)  # the user's question
    call_id: str = Field(max_length=255)
    tool: str = Field(max_length=255)  # an MCP tool's server.tool may be 161 characters
    arguments: str = Field(sa_column=Column(Text, nullable=False))
    requester: str = Field(max_length=160, description="platform:user_id")
    status: str = Field(
        default="pending", max_length=16, description="pending|approved|declined|expired|unasked"
    )
    decided_by: str | None = Field(default=None, max_length=160)
    asked_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    decided_at: datetime | None = None


class BudgetRow(SQLModel, table=True):
    """A spending limit set from chat: for everything (global), a workspace or a channel, per
    UTC day or month. When spent, new turns there get a plain answer, not a model call."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint(
            "scope", "platform", "workspace", "channel", "period", name="uq_budget_scope_period"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16, description="global | workspace | channel")
    platform: str = Field(default="", max_length=32)
    workspace: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=128)
    period: str = Field(max_length=8, description="day | month (UTC)")
    usd: float
    set_by: str = Field(max_length=160)
    set_at: datetime = Field(default_factory=utcnow)


class BudgetAudit(SQLModel, table=True):
    """Every change of a budget: who, from which surface, where, which period, from what, to
    what, when."""

    __tablename__ = "budget_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=160)
    surface: str = Field(max_length=32)
    scope: str = Field(max_length=16)
    platform: str = Field(default="", max_length=32)
    workspace: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=128)
    period: str = Field(max_length=8)
    before_usd: float | None = Field(default=None, description="NULL: no budget was set")
    after_usd: float
