"""``Dispatcher``: delivers the store's queued webhook deliveries. Ray-free; ``actors.webhooks`` hosts one.

Each loop turn claims (leases) the due deliveries, up to ``concurrency`` in flight, and makes one attempt
each: resolve the URL's host, check the address against the policy, connect to that very address (the
``Host`` header and TLS SNI still name the host), ``POST`` the signed body, never follow a redirect. The
attempt is then settled in the store: 2xx → done; 410 → the subscription is disabled; anything else
(another status, a timeout, a connection error) → retried after the backoff until ``max_attempts``. A
dispatcher that dies mid-attempt loses nothing: the lease runs out and another (or its restarted self)
claims the delivery again, with the same delivery id. Receivers therefore dedupe by delivery id.

Nothing secret is logged or recorded: attempts carry the status code or a short error, never the URL,
the secret or the signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import httpx2

from orchestra.errors import OrchestraError
from orchestra.stores._webhooks import Delivery, DeliveryAttempt, WebhookStore
from orchestra.webhooks._policy import (
    DeliveryPolicy,
    Resolver,
    Target,
    TargetBlockedError,
    resolve_target,
    retry_after_s,
    system_resolver,
)
from orchestra.webhooks._signing import SIGNATURE_HEADER, signature_header

__all__ = ["Dispatcher", "Outcome"]

log = logging.getLogger("orchestra.webhooks")

Outcome = str
"""delivered | retrying | failed | disabled | blocked (the ``outcome`` label of the metric)."""

USER_AGENT = "ai-orchestra-webhooks/1"


def _describe(error: httpx2.HTTPError) -> str:
    """A short, secret-free description of a transport failure (never the URL)."""
    if isinstance(error, httpx2.TimeoutException):
        return "timeout"
    if isinstance(error, httpx2.ConnectError):
        return "connection failed"
    if isinstance(error, httpx2.RemoteProtocolError):
        return "invalid HTTP response"
    return type(error).__name__


class Dispatcher:
    def __init__(
        self,
        store: WebhookStore,
        policy: DeliveryPolicy | None = None,
        *,
        on_outcome: Callable[[str, Outcome], None] = lambda event, outcome: None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """``on_outcome(event type, outcome)`` is called once per attempt (the metrics)."""
        self.store = store
        self.policy = policy or DeliveryPolicy.from_settings()
        self._on_outcome = on_outcome
        self._resolver = resolver
        self._clock = clock
        self._rng = rng or random.Random()
        self._client: httpx2.AsyncClient | None = None
        self._inflight: set[asyncio.Task[DeliveryAttempt]] = set()

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            # trust_env=False: a proxy from the environment would connect for us, past the address check
            self._client = httpx2.AsyncClient(trust_env=False, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _claim(self, limit: int) -> list[Delivery]:
        now = self._clock()
        return await self.store.claim(now, now + self.policy.lease_s, limit)

    async def run_once(self) -> int:
        """Claim what is due and attempt it; returns once those attempts are settled (tests, scripts)."""
        claimed = await self._claim(self.policy.concurrency)
        await asyncio.gather(*(self.attempt(d) for d in claimed))
        return len(claimed)

    async def run(self) -> None:
        """Deliver until cancelled: claim while there is room in flight, else wait for an attempt to end
        (or the poll interval); a store outage is logged and tried again next turn."""
        me = asyncio.current_task()
        try:
            while True:
                # A cancel that arrives inside a Redis call can surface as a connection error (caught
                # below as an outage): the request to stop must still stop us.
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError
                claimed = 0
                room = self.policy.concurrency - len(self._inflight)
                if room > 0:
                    try:
                        for delivery in await self._claim(room):
                            task = asyncio.ensure_future(self.attempt(delivery))
                            self._inflight.add(task)
                            task.add_done_callback(self._inflight.discard)
                            claimed += 1
                    except OrchestraError as e:
                        log.warning("webhook queue unavailable: %r", e)
                if claimed and room - claimed > 0:
                    continue  # there may be more due
                if self._inflight:
                    await asyncio.wait(
                        self._inflight, timeout=self.policy.poll_s, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    await asyncio.sleep(self.policy.poll_s)
        finally:
            await self.aclose()

    async def attempt(self, delivery: Delivery) -> DeliveryAttempt:
        """One attempt of ``delivery``, settled in the store; the attempt as recorded."""
        at = self._clock()
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        blocked = False
        try:
            target = await resolve_target(
                delivery.url, allow_private=self.policy.allow_private, resolver=self._resolver
            )
        except TargetBlockedError as e:
            blocked, error = True, str(e)
        else:
            try:
                async with asyncio.timeout(self.policy.timeout_s):
                    status, retry_after = await self._post(target, delivery)
            except TimeoutError:
                error = "timeout"
            except httpx2.HTTPError as e:
                error = _describe(e)
        duration = time.perf_counter() - started
        retry_at: float | None = None
        if blocked:
            outcome = "blocked"
        elif status is not None and 200 <= status < 300:
            outcome = "delivered"
        elif status == 410:
            outcome = "disabled"
        elif delivery.attempt >= self.policy.max_attempts:
            outcome = "failed"
        else:
            outcome = "retrying"
            retry_at = self._clock() + self.policy.retry_delay_s(delivery.attempt, retry_after, self._rng)
        record = DeliveryAttempt(
            delivery_id=delivery.id,
            event=delivery.event_type,
            attempt=delivery.attempt,
            outcome=outcome,
            status_code=status,
            error=error,
            duration_s=round(duration, 6),
            at=at,
            next_retry_at=retry_at,
        )
        try:
            if outcome == "disabled":
                await self.store.disable_subscription(
                    delivery.subscription_id, "the receiver answered 410 Gone"
                )
            await self.store.settle(delivery, record, retry_at)
        except OrchestraError as e:  # not settled: the lease runs out and the delivery is claimed again
            log.warning("webhook delivery %s not settled: %r", delivery.id, e)
        if outcome != "delivered":
            log.info(
                "webhook delivery %s (subscription %s) attempt %d: %s %s",
                delivery.id,
                delivery.subscription_id,
                delivery.attempt,
                outcome,
                status if status is not None else error,
            )
        with contextlib.suppress(Exception):  # metrics never break a delivery
            self._on_outcome(delivery.event_type, outcome)
        return record

    async def _post(self, target: Target, delivery: Delivery) -> tuple[int, float | None]:
        body = delivery.body.encode()
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Orchestra-Event": delivery.event_type,
            "X-Orchestra-Delivery": delivery.id,
            SIGNATURE_HEADER: signature_header(delivery.secret.get_secret_value(), body, int(self._clock())),
        }
        # The connection goes to the checked IP; TLS still verifies the certificate against the host.
        extensions = {"sni_hostname": target.host} if target.url.startswith("https:") else {}
        async with self._http().stream(
            "POST", target.url, content=body, headers=headers, extensions=extensions
        ) as response:  # the body is never read: a receiver cannot make us download anything
            retry_after = None
            if response.status_code in (429, 503):
                retry_after = retry_after_s(response.headers.get("retry-after"))
            return response.status_code, retry_after
