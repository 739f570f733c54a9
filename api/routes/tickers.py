"""``/tickers`` (seed 000) and ``/symbols`` (seed 002): the simulated universe."""

from __future__ import annotations

from fastapi import APIRouter

from api import schemas
from api.convert import dec
from api.deps import API_PREFIX, StateDep, StoreDep

router = APIRouter(prefix=API_PREFIX, tags=["tickers"])


@router.get("/tickers")
async def list_tickers(store: StoreDep) -> schemas.Envelope[list[schemas.TickerInfo]]:
    """All tickers of the simulated universe."""
    rows = await store.tickers()
    return schemas.Envelope(
        data=[
            schemas.TickerInfo(
                ticker=r.ticker,
                name=r.name,
                sector=r.sector,
                initial_price=dec(r.initial_price),
                created_at=r.created_at,
            )
            for r in rows
        ]
    )


@router.get("/symbols")
async def list_symbols(state: StateDep) -> schemas.Envelope[list[str]]:
    """The ticker symbols only (seed-002 spelling)."""
    names = await state.tickers.refresh()
    return schemas.Envelope(data=sorted(names))
