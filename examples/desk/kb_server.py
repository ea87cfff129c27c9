"""The desk's knowledge base as a small stdio MCP server (the mcp SDK's MCPServer): orders and help
articles. Keel hosts it as the environment ``kb`` (started, health-checked, restarted, stopped with
the stack); its two tools become the actions ``kb_lookup_order`` and ``kb_search_articles``.

Run alone: ``python kb_server.py`` (it speaks MCP on stdin/stdout).
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("kb", instructions="Orders and help articles of the demo shop.")

ORDERS: dict[str, dict[str, object]] = {
    "A-1042": {
        "order": "A-1042",
        "customer": "Ada Lovelace",
        "item": "Espresso machine",
        "total_eur": 240.0,
        "status": "delivered",
        "days_since_delivery": 6,
        "damaged_on_arrival": True,
    },
    "A-2077": {
        "order": "A-2077",
        "customer": "Alan Turing",
        "item": "Milk frother",
        "total_eur": 35.0,
        "status": "delivered",
        "days_since_delivery": 12,
        "damaged_on_arrival": True,
    },
}

ARTICLES = [
    {
        "id": "kb-12",
        "title": "Damaged on arrival",
        "text": "Items damaged on arrival are refunded in full within 30 days.",
    },
    {"id": "kb-31", "title": "Returns", "text": "Unused items can be returned within 30 days for 80% of the price."},
    {"id": "kb-48", "title": "Descaling", "text": "Descale espresso machines every two months."},
]


@server.tool()
def lookup_order(order: str) -> dict[str, object]:
    """The facts of one order: customer, item, total, delivery, damage."""
    if order not in ORDERS:
        raise ValueError(f"no order {order!r}")
    return ORDERS[order]


@server.tool()
def search_articles(query: str) -> list[dict[str, str]]:
    """Help articles whose title or text shares a word with the query, best first."""
    words = {w.strip(".,!?").lower() for w in query.split() if len(w) > 3}

    def score(article: dict[str, str]) -> int:
        return len(words & {w.strip(".,").lower() for w in f"{article['title']} {article['text']}".split()})

    return [a for a in sorted(ARTICLES, key=score, reverse=True) if score(a) > 0][:2]


if __name__ == "__main__":
    server.run()
