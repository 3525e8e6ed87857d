"""Per-channel rate limits: the same contract, on an injected clock, in-process and on Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.errors import ConfigError
from engine.ratelimit import (
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    build_limiter,
    check_channels,
)
from engine.settings import RateLimit, Settings
from tests.conftest import REDIS_URL, close_services, free_port, make_services

T0 = 1_000.0  # an arbitrary start on the injected clock, in seconds

MakeLimiter = Callable[[dict[str, RateLimit]], RateLimiter]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(params=["in-process", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> MakeLimiter:
    """Build a limiter of each kind; the Redis one under this test's own key prefix."""
    if request.param == "in-process":
        return InProcessRateLimiter
    namespace = request.getfixturevalue("redis_namespace")
    client = request.getfixturevalue("redis_client")
    return lambda limits: RedisRateLimiter(client, limits, f"{namespace}:ratelimit")


def test_a_burst_goes_at_once_then_one_send_per_interval(make_limiter):
    limiter = make_limiter({"email": RateLimit(10, 3)})
    # Given a channel at rest, 3 sends go at once
    assert [limiter.acquire("email", now=T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # Then the 4th waits one interval (1/10 s), and asking again counts nothing
    assert limiter.acquire("email", now=T0) == 0.1
    assert limiter.acquire("email", now=T0) == 0.1
    assert limiter.acquire("email", now=T0 + 0.04) == 0.06
    # When that interval has passed, exactly one more goes
    assert limiter.acquire("email", now=T0 + 0.1) == 0.0
    assert limiter.acquire("email", now=T0 + 0.1) == 0.1


def test_the_allowance_refills_up_to_the_burst_and_no_further(make_limiter):
    limiter = make_limiter({"sms": RateLimit(2, 4)})
    assert [limiter.acquire("sms", now=T0) for _ in range(5)] == [0.0, 0.0, 0.0, 0.0, 0.5]
    # One second later, two sends have come back
    assert [limiter.acquire("sms", now=T0 + 1) for _ in range(3)] == [0.0, 0.0, 0.5]
    # An hour at rest fills the bucket to the burst of 4, not to 7,200
    later = T0 + 3600
    assert [limiter.acquire("sms", now=later) for _ in range(5)] == [0.0, 0.0, 0.0, 0.0, 0.5]


def test_a_fractional_rate_grants_exactly_its_allowance(make_limiter):
    # 2.5 per second, the burst defaulting to 2.5: 2 sends at once, then one every 0.4 s
    limiter = make_limiter({"sms": RateLimit.per_second(2.5)})
    assert [limiter.acquire("sms", now=T0) for _ in range(3)] == [0.0, 0.0, 0.2]
    # A sender that always comes back when told, over 10 seconds
    granted, now = 2, T0
    while True:
        wait = limiter.acquire("sms", now=now)
        if wait == 0.0:
            granted += 1
        now = round(now + wait, 6)
        if now > T0 + 10:
            break
    # gets rate * 10 s + burst = 27.5, rounded down: sends at T0 (2), T0+0.2, 0.6, ..., 9.8 (25)
    assert granted == 27


def test_channels_are_limited_independently(make_limiter):
    limiter = make_limiter({"email": RateLimit(1, 1), "sms": RateLimit(1, 2)})
    assert limiter.acquire("email", now=T0) == 0.0
    assert limiter.acquire("email", now=T0) == 1.0
    # sms still has its own burst of 2, untouched by email's
    assert [limiter.acquire("sms", now=T0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.acquire("email", now=T0) == 1.0


def test_a_channel_without_a_limit_always_goes(make_limiter):
    limiter = make_limiter({"email": RateLimit(1, 1)})
    assert all(limiter.acquire("webhook", now=T0) == 0.0 for _ in range(1000))
    ticket = limiter.ticket("webhook")
    assert ticket.granted and ticket.at is None  # no clock read, no Redis asked


def test_concurrent_senders_share_one_burst(make_limiter):
    # Given 8 threads asking 50 times each at the same instant
    limiter = make_limiter({"email": RateLimit(1, 5)})
    waits: list[float] = []
    lock = threading.Lock()

    def hammer() -> None:
        mine = [limiter.acquire("email", now=T0) for _ in range(50)]
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly the burst went, and every other send was told to wait one interval
    assert waits.count(0.0) == 5
    assert sorted(set(waits)) == [0.0, 1.0]


def test_without_an_injected_clock_the_in_process_limiter_reads_the_monotonic_clock():
    limiter = InProcessRateLimiter({"email": RateLimit(1, 1)})
    before = time.monotonic()
    ticket = limiter.ticket("email")
    after = time.monotonic()
    assert ticket.granted
    assert before - 1e-6 <= ticket.at <= after + 1e-6
    assert 0 < limiter.acquire("email") <= 1.0


def test_without_an_injected_clock_the_redis_limiter_reads_the_servers_clock(redis_client, redis_namespace):
    limiter = RedisRateLimiter(redis_client, {"email": RateLimit(1, 1)}, f"{redis_namespace}:ratelimit")
    seconds, micros = redis_client.time()
    before = seconds + micros / 1e6
    ticket = limiter.ticket("email")
    seconds, micros = redis_client.time()
    after = seconds + micros / 1e6
    assert ticket.granted
    assert before <= ticket.at <= after
    # The channel's state is one key under the prefix, gone once the channel is at rest again
    key = f"{redis_namespace}:ratelimit:email"
    assert 0 < redis_client.pttl(key) <= 1001
    assert 0 < limiter.acquire("email") <= 1.0


def test_a_channel_without_a_limit_makes_no_redis_round_trip():
    # A client of a Redis that is not there: only a limited channel needs it
    nowhere = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    limiter = RedisRateLimiter(nowhere, {"email": RateLimit(10, 10)}, "nowhere:ratelimit")
    try:
        assert limiter.acquire("sms") == 0.0
        with pytest.raises(redis.ConnectionError):
            limiter.acquire("email")
    finally:
        nowhere.close()


def test_build_limiter_shares_limits_through_redis_when_the_broker_is_redis(redis_client):
    settings = Settings(namespace="shop-1", rate_limits={"email": RateLimit(10, 20)})
    shared = build_limiter(settings, redis_client)
    assert isinstance(shared, RedisRateLimiter)
    assert shared.key("email") == "shop-1:ratelimit:email"
    assert isinstance(build_limiter(settings, None), InProcessRateLimiter)


def test_a_limit_on_a_channel_not_installed_is_refused():
    settings = Settings(rate_limits={"emial": RateLimit(10, 10), "sms": RateLimit(1, 1), "fax": RateLimit(1, 1)})
    with pytest.raises(ConfigError) as caught:
        build_limiter(settings, None, channels=["email", "sms", "webhook"])
    assert str(caught.value).splitlines() == [
        "CHANNEL_RATE_LIMITS names the channel 'emial', which is not installed. Did you mean 'email'? "
        "(installed: email, sms, webhook)",
        "CHANNEL_RATE_LIMITS names the channel 'fax', which is not installed. (installed: email, sms, webhook)",
    ]
    check_channels(settings.rate_limits, ["emial", "sms", "fax"])  # all installed: no error


def test_services_carry_the_limiter_of_their_broker(sqlite_url, redis_namespace):
    limits = {"email": RateLimit(10, 20)}
    embedded = make_services(sqlite_url, rate_limits=limits)
    shared = make_services(sqlite_url, rate_limits=limits, redis_url=REDIS_URL, namespace=redis_namespace)
    try:
        assert isinstance(embedded.rate_limiter, InProcessRateLimiter)
        assert isinstance(shared.rate_limiter, RedisRateLimiter)
        assert shared.rate_limiter.key("email") == f"{redis_namespace}:ratelimit:email"
        assert shared.rate_limiter.limits == limits
    finally:
        close_services(embedded)
        close_services(shared)
