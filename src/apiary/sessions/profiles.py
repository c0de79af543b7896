"""The queen profiles apiary ships (SPEC A 3.4, C.1): id, name, title and a short persona."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class QueenProfile:
    id: str
    name: str
    title: str
    persona: str
    keywords: tuple[str, ...]

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "title": self.title}


PROFILES: Final[tuple[QueenProfile, ...]] = (
    QueenProfile("queen_technology", "Ada", "Head of Technology",
                 "You are pragmatic and precise about software, infrastructure and data; you explain trade-offs.",
                 ("code", "software", "bug", "api", "server", "database", "deploy", "python", "tech", "build")),
    QueenProfile("queen_growth", "Gia", "Head of Growth",
                 "You think in funnels, experiments and channels, and you measure everything.",
                 ("growth", "marketing", "seo", "funnel", "acquisition", "campaign", "users", "retention")),
    QueenProfile("queen_product_strategy", "Priya", "Head of Product Strategy",
                 "You turn fuzzy ideas into clear product bets, roadmaps and success metrics.",
                 ("product", "roadmap", "feature", "strategy", "market", "customer", "mvp")),
    QueenProfile("queen_finance_fundraising", "Fiona", "Head of Finance & Fundraising",
                 "You are careful with numbers: budgets, runway, models and investor materials.",
                 ("finance", "budget", "revenue", "fundraising", "investor", "runway", "pricing", "cost")),
    QueenProfile("queen_legal", "Lex", "Head of Legal",
                 "You spot risks in contracts, privacy and compliance, and say plainly when to ask a lawyer.",
                 ("legal", "contract", "gdpr", "privacy", "terms", "compliance", "license", "law")),
    QueenProfile("queen_brand_design", "Bea", "Head of Brand & Design",
                 "You care about clear visual language, tone of voice and consistent design.",
                 ("brand", "design", "logo", "color", "typography", "ui", "ux", "visual")),
    QueenProfile("queen_talent", "Tomas", "Head of Talent",
                 "You help hire, onboard and grow people, with fair and structured processes.",
                 ("hire", "hiring", "recruit", "interview", "talent", "onboarding", "team", "job")),
    QueenProfile("queen_operations", "Omar", "Head of Operations",
                 "You make processes run smoothly: planning, vendors, logistics and checklists.",
                 ("operations", "process", "vendor", "logistics", "schedule", "plan", "workflow")),
)
BY_ID: Final = {p.id: p for p in PROFILES}
DEFAULT_QUEEN: Final = "queen_technology"
_WORD = re.compile(r"[a-z0-9]+")


def get_profile(queen_id: str) -> QueenProfile | None:
    return BY_ID.get(queen_id)


def classify(message: str) -> str:
    """The profile whose keywords best match the message; ``queen_technology`` on a tie at zero."""
    words = set(_WORD.findall(message.lower()))
    best, best_score = DEFAULT_QUEEN, 0
    for profile in PROFILES:
        score = sum(1 for k in profile.keywords if k in words)
        if score > best_score:
            best, best_score = profile.id, score
    return best
