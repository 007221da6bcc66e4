from decimal import Decimal

from services.catalog.registry import build_registry
from services.settings import PriceOverride, Settings
from services.types import PriceCard
from services.usage.pricing import price_job
from tests.support.models import LLAMA_90B


def test_pricing_uses_the_90b_price_card_exactly():
    card = build_registry(Settings()).get(LLAMA_90B).price
    cost = price_job(card, prompt_tokens=1_000_000, completion_tokens=500_000, images=2)
    assert cost.input == Decimal("0.35")
    assert cost.output == Decimal("0.20")
    assert cost.images == Decimal("0.0010116")
    assert cost.to_public() == {
        "input": "0.35",
        "output": "0.2",
        "images": "0.0010116",
        "total": "0.5510116",
        "currency": "USD",
    }


def test_pricing_small_jobs_keep_precision():
    card = build_registry(Settings()).get(LLAMA_90B).price
    cost = price_job(card, prompt_tokens=17, completion_tokens=3, images=1)
    assert cost.to_public()["total"] == "0.00051295"  # 17 * 0.35e-6 + 3 * 0.40e-6 + 0.0005058


def test_pricing_reproduces_the_seed_examples_exactly():
    card = build_registry(Settings()).get(LLAMA_90B).price
    assert (card.input_per_million, card.output_per_million, card.per_image) == (
        Decimal("0.35"), Decimal("0.40"), Decimal("0.0005058"),
    )  # fmt: skip
    tokens = price_job(card, prompt_tokens=1_000_000, completion_tokens=100_000, images=0)
    assert tokens.total == Decimal("0.39")
    assert tokens.to_public()["total"] == "0.39"
    images = price_job(card, prompt_tokens=0, completion_tokens=0, images=100)
    assert images.total == Decimal("0.05058")
    assert images.to_public()["total"] == "0.05058"


def test_pricing_total_is_exactly_the_sum_of_rounded_parts():
    card = PriceCard(Decimal("0.123456789"), Decimal("0.987654321"), Decimal("0.00000000015"))
    cost = price_job(card, prompt_tokens=3, completion_tokens=7, images=1)
    assert cost.input == Decimal("0.0000003704")  # 3.70370367e-7, half-even to 1e-10
    assert cost.images == Decimal("0.0000000002")  # 1.5e-10 → 2e-10 (half-even)
    assert cost.total == cost.input + cost.output + cost.images
    assert Decimal(cost.to_public()["total"]) == cost.total


def test_pricing_override_replaces_given_fields_only():
    override = PriceOverride(LLAMA_90B, output_per_million=Decimal("1.5"))
    card = build_registry(Settings(price_overrides=(override,))).get(LLAMA_90B).price
    assert card == PriceCard(Decimal("0.35"), Decimal("1.5"), Decimal("0.0005058"))
