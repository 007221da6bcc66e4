from decimal import Decimal

from services.models_registry import LLAMA_90B, build_registry
from services.settings import Settings
from services.usage.pricing import price_job


def test_pricing_uses_the_90b_price_card_exactly():
    card = build_registry(Settings()).get(LLAMA_90B).price
    cost = price_job(card, prompt_tokens=1_000_000, completion_tokens=500_000, images=2)
    assert cost.input == Decimal("0.35")
    assert cost.output == Decimal("0.20")
    assert cost.images == Decimal("0.0010116")
    assert cost.to_json() == {
        "input": "0.35",
        "output": "0.2",
        "images": "0.0010116",
        "total": "0.5510116",
        "currency": "USD",
    }


def test_pricing_small_jobs_keep_precision():
    card = build_registry(Settings()).get(LLAMA_90B).price
    cost = price_job(card, prompt_tokens=17, completion_tokens=3, images=1)
    assert cost.to_json()["total"] == "0.00051295"  # 17 * 0.35e-6 + 3 * 0.40e-6 + 0.0005058
