"""The demo's sample trade is consistent with its catalogues: every SKU a buyer maps exists on
both sides, so the sample orders apply without waiting for a person."""

import pytest

from yggdrasil.devstack.demo import demo_tenants
from yggdrasil.devstack.seed import catalogue_of, traded_items

pytestmark = pytest.mark.unit


def skus(tenant: str) -> set[str]:
    return {item.sku for item in catalogue_of(tenant).items}


@pytest.mark.parametrize("count", [2, 4])
def test_every_traded_sku_exists_in_the_seller_and_the_buyer_catalogue(count: int):
    tenants = [t.id for t in demo_tenants(count)]
    for buyer in tenants:
        for seller in tenants:
            if buyer == seller:
                continue
            pairs = traded_items(buyer, seller)
            assert pairs, (buyer, seller)
            assert {sold for sold, _ in pairs} <= skus(seller)
            assert {bought for _, bought in pairs} <= skus(buyer)


def test_acme_and_bravo_trade_named_goods():
    assert traded_items("bravo", "acme") == (("ACME-ANVIL", "BRV-ANVIL"), ("ACME-SKATES", "BRV-SKATES"))
    assert traded_items("acme", "bravo") == (("BRV-HELMET", "ACME-HELMET"), ("BRV-ROPE", "ACME-ROPE"))
