"""The platform-neutral paint service: admission, fair queue, engine runs, events.

API (this text is the contract the adapters build on; the code below is the truth):

Data types are already in `bot/jobs.py` (read it): `PaintRequest`, `Job`, `JobState`, events `JobEvent` (each has `.job: Job` snapshot) with subclasses `Queued(position, eta)`, `PositionChanged(position, eta)`, `Started(rerun)`, `Progress(percent, scale, scales, eta, preview_jpeg, note)`, `Finished(result_png, seconds)`, `Failed(code, message)`, `Cancelled(by_user)`; `QueueOverview`, `ServiceStatus`. Errors in `bot/errors.py` (`UserFacingError` tree; `.message` is what to show the member). Options: `engine.protocol.PaintOptions(strength=1..10, quality in draft/standard/high, keep_colors, brush in small/medium/large)` with `.validate()` raising `OptionError` (a ValueError). Settings: `bot/settings.py` (`DiscordSettings`, `TelegramSettings`, `Limits`; tokens are `Secret`, use `.value`). Image rules: `engine/images.py` (Pillow only, safe to import in the bot): `probe(data, role="photo"|"painting", max_bytes=...)` raises `ImageError` subclasses with `.message`; the service itself validates images on submit, so adapters only do cheap pre-checks (content type, size against the platform limit) before downloading.

```python
class PaintService:
    def __init__(self, *, store: Store, engine: Engine, limits: Limits, data_dir: Path,
                 clock: Clock | None = None, preview_seconds: float = 6.0,
                 default_quality: str = "standard") -> None
    async def start(self) -> None      # recovers queued jobs from SQLite, starts the engine and run loop
    async def close(self) -> None      # also: `async with service:`
    def add_listener(self, listener: Callable[[JobEvent], Awaitable[None]]) -> None
        # every event of every job goes to every listener (in order, per listener; a slow or
        # failing listener never blocks the queue). Filter on event.job.platform.
    async def submit(self, request: PaintRequest) -> Job        # validates, raises UserFacingError; emits Queued
    async def reroll(self, job_id: str, *, user_id: str, user_name: str, change: str) -> Job
        # change in {"stronger", "softer", "keep_colors"}: a new job from the same stored inputs,
        # same platform/chat; raises NotAvailable if the inputs expired, LimitReached etc.
    async def cancel(self, job_id: str, *, user_id: str, moderator: bool = False) -> Job  # NotAllowed / JobNotFound
    async def cancel_mine(self, platform: str, user_id: str) -> Job   # JobNotFound("You have no painting in progress...")
    async def attach_status(self, job_id: str, status_ref: str | None) -> None   # remember where the status message is
    def get(self, job_id: str) -> Job                         # JobNotFound
    def position(self, job_id: str) -> int | None             # 1 = next; None when not waiting
    def overview(self) -> QueueOverview                        # running job + waiting jobs in run order + ETAs
    def status(self) -> ServiceStatus
    def result_png(self, job: Job) -> bytes                    # NotAvailable once deleted/expired
    def input_bytes(self, job: Job, which: str) -> bytes       # "photo" | "painting"
    async def delete_result(self, job_id: str, *, user_id: str, moderator: bool = False) -> Job
```
Store: `bot/store.py` `Store.open(path: Path) -> Store` (SQLite file). Engine for tests: `tests/fakes.py` will provide `FakeEngine` (in-process, scripted: `FakeEngine(steps=3)` runs each job through N progress events with a small preview then finishes with a real small PNG; also manual control: `FakeEngine(auto=False)` then `await fake.wait_started(job_id)`, `await fake.progress(job_id, percent, preview=True)`, `fake.finish(job_id)`, `fake.fail(job_id, code, message)`); and `tests/bot/conftest.py` will provide fixtures `fake_engine`, `store`, `service` (a started PaintService on a tmp data folder with the fake engine; `clock` fixture = `tests.fakes.FakeClock` with `.advance(seconds)`). Until they land, write your harness and adapter against this API; then adapt to what landed (read the actual code; it wins over this text).
Job ids are short strings (about 10 characters, url-safe), so they fit in button custom ids / callback data.
"""

from __future__ import annotations
