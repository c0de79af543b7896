"""The LangGraph side of the harness benchmark; runs inside ``benchmarks/.venv-langgraph`` only.

Same workload as ``bench_harness.py`` gives apiary: N turns on one thread, each turn a new user
message, a model call that asks for one tool call, the tool's result, and a model call that
answers with text. The model is scripted and does no work (the same texts and arguments as on
the apiary side); durability is on (``SqliteSaver`` / ``AsyncSqliteSaver`` on a file). It prints
one JSON object: turn start times (ns), the time spent measuring (excluded from the steps), and
bytes stored after the turns named in ``measure`` (0: before the first turn).

Variants:
- ``chatmodel``: the idiomatic graph: a ``BaseChatModel`` subclass as the model (callbacks and
  all), ``langgraph.prebuilt.ToolNode`` with a ``@tool``, ``tools_condition``; ``graph.invoke``.
- ``plain``: the least LangGraph can do: a plain function as the model node, a plain function as
  the tool node, the same ``MessagesState``; ``graph.invoke``.
- ``async``: ``chatmodel`` on ``AsyncSqliteSaver`` with ``graph.ainvoke``.

``synchronous`` is the SQLite ``PRAGMA synchronous`` set on the saver's connection: apiary runs
``NORMAL``, so that is the default here too (SqliteSaver itself leaves SQLite's default, FULL).

Usage: python langgraph_agent.py '{"turns": 500, "measure": [0, 10, 90, 100], "variant": "plain", "db": "/tmp/x.db"}'
"""

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
from importlib import metadata
from typing import Any


def words(i: int, salt: str) -> str:
    """A text unlike the previous turns' texts (apiary's stall detector compares them)."""
    return hashlib.sha1(f"{salt}{i}".encode()).hexdigest()[:16]


def turn_texts(i: int) -> tuple[str, str]:
    return f"step {words(i, 'a')}", f"done {words(i, 'b')}"


def logical_bytes(path: str) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        cp = conn.execute(
            "SELECT COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0), COUNT(*) FROM checkpoints").fetchone()
        wr = conn.execute("SELECT COALESCE(SUM(LENGTH(value)), 0), COUNT(*) FROM writes").fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return {"logical": int(cp[0]) + int(wr[0]), "checkpoint_rows": int(cp[1]), "write_rows": int(wr[1]),
            "physical": int(pages) * int(page_size)}


def build(variant: str, saver: Any) -> tuple[Any, dict[str, int]]:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    counter = {"calls": 0}

    def respond() -> AIMessage:
        n = counter["calls"]
        counter["calls"] += 1
        i, second = divmod(n, 2)
        first_text, last_text = turn_texts(i)
        if second:
            return AIMessage(content=last_text)
        return AIMessage(content=first_text, tool_calls=[{"name": "echo", "args": {"i": i}, "id": f"call_{i}_0",
                                                          "type": "tool_call"}])

    if variant == "plain":
        def model_node(state: MessagesState) -> dict[str, Any]:
            STARTS.append(time.perf_counter_ns()) if counter["calls"] % 2 == 0 else None
            return {"messages": [respond()]}

        def tool_node(state: MessagesState) -> dict[str, Any]:
            last = state["messages"][-1]
            return {"messages": [ToolMessage(content=f"echo {call['args']}", tool_call_id=call["id"])
                                 for call in last.tool_calls]}

        def route(state: MessagesState) -> str:
            return "tools" if state["messages"][-1].tool_calls else END

        g = StateGraph(MessagesState)
        g.add_node("model", model_node)
        g.add_node("tools", tool_node)
        g.add_edge(START, "model")
        g.add_conditional_edges("model", route, ["tools", END])
        g.add_edge("tools", "model")
        return g.compile(checkpointer=saver), counter

    class ScriptedChatModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "scripted"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            if counter["calls"] % 2 == 0:
                STARTS.append(time.perf_counter_ns())
            return ChatResult(generations=[ChatGeneration(message=respond())])

        async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                             **kw: Any) -> ChatResult:
            return self._generate(messages, stop, run_manager, **kw)

    @tool
    def echo(i: int) -> str:
        """Echo the arguments."""
        return f"echo {{'i': {i}}}"

    model = ScriptedChatModel()

    def model_node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def amodel_node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("model", amodel_node if variant == "async" else model_node)
    g.add_node("tools", ToolNode([echo]))
    g.add_edge(START, "model")
    g.add_conditional_edges("model", tools_condition, ["tools", END])
    g.add_edge("tools", "model")
    return g.compile(checkpointer=saver), counter


STARTS: list[int] = []


def run_sync(cfg: dict[str, Any]) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(cfg["db"], check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    conn.execute(f"PRAGMA synchronous={cfg.get('synchronous', 'NORMAL')}")
    graph, _ = build(cfg["variant"], saver)
    thread = {"configurable": {"thread_id": "bench"}}
    points = set(cfg["measure"])
    sizes: dict[str, Any] = {}
    excluded: dict[int, int] = {}
    if 0 in points:
        sizes["0"] = logical_bytes(cfg["db"])
    t0 = time.perf_counter_ns()
    for turn in range(1, cfg["turns"] + 1):
        if time.perf_counter_ns() - t0 > cfg.get("max_s", 1e9) * 1e9:
            break   # out of time: the turns reached are len(starts_ns) - 1
        graph.invoke({"messages": [HumanMessage(content="[Continue working on your current task.]")]}, thread)
        if turn in points:
            m0 = time.perf_counter_ns()
            sizes[str(turn)] = logical_bytes(cfg["db"])
            excluded[turn] = time.perf_counter_ns() - m0
    total = time.perf_counter_ns() - t0
    STARTS.append(time.perf_counter_ns())   # closes the last turn
    conn.close()
    return {"starts_ns": STARTS, "excluded_ns": excluded, "sizes": sizes, "total_ns": total}


async def run_async(cfg: dict[str, Any]) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(cfg["db"]) as saver:
        await saver.setup()
        await saver.conn.execute(f"PRAGMA synchronous={cfg.get('synchronous', 'NORMAL')}")
        graph, _ = build("async", saver)
        thread = {"configurable": {"thread_id": "bench"}}
        points = set(cfg["measure"])
        sizes: dict[str, Any] = {}
        excluded: dict[int, int] = {}
        if 0 in points:
            sizes["0"] = logical_bytes(cfg["db"])
        t0 = time.perf_counter_ns()
        for turn in range(1, cfg["turns"] + 1):
            if time.perf_counter_ns() - t0 > cfg.get("max_s", 1e9) * 1e9:
                break
            await graph.ainvoke({"messages": [HumanMessage(content="[Continue working on your current task.]")]},
                                thread)
            if turn in points:
                m0 = time.perf_counter_ns()
                sizes[str(turn)] = logical_bytes(cfg["db"])
                excluded[turn] = time.perf_counter_ns() - m0
        total = time.perf_counter_ns() - t0
        STARTS.append(time.perf_counter_ns())
    return {"starts_ns": STARTS, "excluded_ns": excluded, "sizes": sizes, "total_ns": total}


def versions() -> dict[str, str]:
    out = {}
    for name in ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "langgraph-prebuilt",
                 "langchain-core", "aiosqlite", "ormsgpack"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if os.path.exists(cfg["db"]):
        os.unlink(cfg["db"])
    result = asyncio.run(run_async(cfg)) if cfg["variant"] == "async" else run_sync(cfg)
    result["db_file_bytes"] = sum(os.path.getsize(cfg["db"] + s) for s in ("", "-wal", "-shm")
                                  if os.path.exists(cfg["db"] + s))
    result["versions"] = versions()
    result["variant"] = cfg["variant"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
