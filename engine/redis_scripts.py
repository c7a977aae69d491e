"""The scaled mode's Redis layout: the key names, and one atomic Lua script per transition.

Standard library only (the scripts are text); :mod:`engine.redis_jobs` loads and calls them.
Every key shares one hash tag (``{atelier}:``), so a script that reaches a job's own keys (its
hash, its member's and chat's sets, its bot's event stream: names stored in the job hash at
admission) stays in one slot.

Keys (``P`` = the prefix)::

    P waiting          sorted set: job id -> turn * 2^20 + seq (seq counts arrivals per turn)
    P turn             the turn of the job claimed last (the embedded queue's "current turn")
    P turnseq          hash: turn -> arrivals admitted into it so far
    P jobs             stream of claimed jobs, consumer group "gpu": a pending entry is a lease
    P job:<id>         hash: the job (state, attempts, owner entry, inputs (photo, painting, a
                       blend's painting2), options, timelapse, ...)
    P member:<p>/<u>   sorted set: the member's active jobs -> their turn (per-member limit)
    P chat:<p>/<c>     set: the chat's waiting jobs (per-chat limit)
    P bot:<bot>        set: the bot's active jobs (reconcile)
    P events:<bot>     stream of the bot's job events, MAXLEN ~
    P blob:<sha256>    inputs and results in transit, with a TTL
    P alive:<host>:<device>   one per agent GPU, with an expiry
    P instance:<bot>   the bot process using that bot id now (a token), with an expiry

A job's state: queued -> running -> done | failed | cancelled, and running -> queued again when
its host dies (reap) or its engine crashes (finish "retry"). ``attempts`` counts deliveries.

Scores are integers below 2^53 (exact in a double) while turns stay below 2^33; a turn holds at
most one job per member, so 2^20 arrivals per turn is a million members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PREFIX: Final = "{atelier}:"
TURN_FACTOR: Final = 2**20


@dataclass(frozen=True)
class Keys:
    prefix: str = PREFIX

    @property
    def waiting(self) -> str:
        return f"{self.prefix}waiting"

    @property
    def turn(self) -> str:
        return f"{self.prefix}turn"

    @property
    def turnseq(self) -> str:
        return f"{self.prefix}turnseq"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}cancel"

    @property
    def wake_channel(self) -> str:
        return f"{self.prefix}wake"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def member(self, platform: str, user_id: str) -> str:
        return f"{self.prefix}member:{platform}/{user_id}"

    def chat(self, platform: str, chat_id: str) -> str:
        return f"{self.prefix}chat:{platform}/{chat_id}"

    def bot(self, bot: str) -> str:
        return f"{self.prefix}bot:{bot}"

    def events(self, bot: str) -> str:
        return f"{self.prefix}events:{bot}"

    def blob(self, digest: str) -> str:
        return f"{self.prefix}blob:{digest}"

    def instance(self, bot: str) -> str:
        return f"{self.prefix}instance:{bot}"

    def alive(self, consumer: str) -> str:
        return f"{self.prefix}alive:{consumer}"


# Helpers prepended to every script. Redis forbids Lua globals, so everything is a local.
_PRELUDE = """
local function emit(job, maxlen, fields)
  local events = redis.call('HGET', job, 'events_key')
  if not events then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', unpack(fields))
end

local function let_go(job, id)
  local member = redis.call('HGET', job, 'member_key')
  if member then redis.call('ZREM', member, id) end
  local bot = redis.call('HGET', job, 'bot_key')
  if bot then redis.call('SREM', bot, id) end
end

local function close(job, id, state, ttl, now, extra)
  redis.call('HSET', job, 'state', state, 'finished', now, unpack(extra))
  redis.call('HDEL', job, 'consumer')
  let_go(job, id)
  redis.call('EXPIRE', job, ttl)
end

local function requeue(job, id, waiting, wake)
  redis.call('ZADD', waiting, redis.call('HGET', job, 'score'), id)
  local chat = redis.call('HGET', job, 'chat_key')
  if chat then redis.call('SADD', chat, id) end
  redis.call('HSET', job, 'state', 'queued')
  redis.call('HDEL', job, 'consumer', 'entry')
  redis.call('PUBLISH', wake, id)
end

-- A job whose run ended without a result: cancelled if asked, failed after max deliveries,
-- otherwise back at its original score (the front of its turn).
local function requeue_or_fail(job, id, waiting, wake, max_attempts, ttl, maxlen, now,
                               reason, message)
  local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
  local by = redis.call('HGET', job, 'cancel')
  if by then
    close(job, id, 'cancelled', ttl, now, {})
    emit(job, maxlen, {'type', 'cancelled', 'job', id, 'attempt', attempts, 'by', by, 't', now})
    return 'cancelled'
  end
  if attempts >= max_attempts then
    close(job, id, 'failed', ttl, now, {'code', 'engine_crashed', 'message', message})
    emit(job, maxlen, {'type', 'failed', 'job', id, 'attempt', attempts,
                       'code', 'engine_crashed', 'message', message, 't', now})
    return 'failed'
  end
  requeue(job, id, waiting, wake)
  emit(job, maxlen, {'type', 'requeued', 'job', id, 'attempt', attempts + 1,
                     'reason', reason, 't', now})
  return 'requeued'
end

-- Fencing: the job's current entry is this one and this consumer holds it.
local function owns(jobs, group, job, consumer, entry)
  if redis.call('HGET', job, 'entry') ~= entry then return false end
  local pending = redis.pcall('XPENDING', jobs, group, entry, entry, 1)
  if type(pending) ~= 'table' or pending.err or #pending == 0 then return false end
  return pending[1][2] == consumer
end
"""

# KEYS: waiting, turn, turnseq, job, member, chat, bot
# ARGV: id, per_member, queue_max, chat_max, wake channel, then the job's fields (name, value)...
# -> {'ok', position, turn} or {refusal, count}: 'member' | 'queue' | 'chat' | 'duplicate'
ADMIT: Final = (
    _PRELUDE
    + """
local waiting, turnkey, turnseq, job = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local member, chat, bot = KEYS[5], KEYS[6], KEYS[7]
local id = ARGV[1]
if redis.call('EXISTS', job) == 1 then return {'duplicate', 0} end
local mine = redis.call('ZCARD', member)
if mine >= tonumber(ARGV[2]) then return {'member', mine} end
local queued = redis.call('ZCARD', waiting)
if queued >= tonumber(ARGV[3]) then return {'queue', queued} end
local in_chat = redis.call('SCARD', chat)
if in_chat >= tonumber(ARGV[4]) then return {'chat', in_chat} end
-- The member's turn, as the embedded queue's next_turn(): a first job joins the turn being
-- served; each further one goes one turn after the member's latest.
local turn = tonumber(redis.call('GET', turnkey) or '0')
local latest = redis.call('ZREVRANGE', member, 0, 0, 'WITHSCORES')
if #latest > 0 then turn = math.max(turn, tonumber(latest[2]) + 1) end
local turn_text = string.format('%d', turn)
local seq = redis.call('HINCRBY', turnseq, turn_text, 1)
local score = string.format('%.0f', turn * """
    + str(TURN_FACTOR)
    + """ + seq)
redis.call('ZADD', waiting, score, id)
redis.call('ZADD', member, turn_text, id)
redis.call('SADD', chat, id)
redis.call('SADD', bot, id)
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', job, 'state', 'queued', 'turn', turn_text, 'score', score, 'attempts', 0,
           'member_key', member, 'chat_key', chat, 'bot_key', bot, unpack(fields))
redis.call('PUBLISH', ARGV[5], id)
return {'ok', redis.call('ZRANK', waiting, id) + 1, turn}
"""
)

# KEYS: waiting, turn, turnseq, jobs
# ARGV: consumer, group, prefix, now, blob ttl, job ttl, events maxlen
# -> false when nothing waits, else {id, entry, attempt, {job hash as name, value, ...}}
CLAIM: Final = (
    _PRELUDE
    + """
local waiting, turnkey, turnseq, jobs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local consumer, group, prefix, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local blob_ttl, ttl, maxlen = ARGV[5], ARGV[6], ARGV[7]
for _ = 1, 1000 do
  local head = redis.call('ZRANGE', waiting, 0, 0)
  if #head == 0 then return false end
  local id = head[1]
  local job = prefix .. 'job:' .. id
  redis.call('ZREM', waiting, id)
  local chat = redis.call('HGET', job, 'chat_key')
  if chat then redis.call('SREM', chat, id) end
  local state = redis.call('HGET', job, 'state')
  local by = redis.call('HGET', job, 'cancel')
  if state == 'queued' and by then
    -- Cancelled while waiting (a cancel that raced this claim): finish it, take the next.
    close(job, id, 'cancelled', ttl, now, {})
    emit(job, maxlen, {'type', 'cancelled', 'job', id, 'attempt', 0, 'by', by, 't', now})
  elseif state == 'queued' then
    local turn = tonumber(redis.call('HGET', job, 'turn'))
    local current = tonumber(redis.call('GET', turnkey) or '0')
    if turn > current then
      redis.call('SET', turnkey, string.format('%d', turn))
      -- No admission goes to a turn before the current one: forget their arrival counters.
      for t = current, turn - 1 do redis.call('HDEL', turnseq, string.format('%d', t)) end
    end
    local attempt = redis.call('HINCRBY', job, 'attempts', 1)
    redis.pcall('XGROUP', 'CREATE', jobs, group, '$', 'MKSTREAM')
    local entry = redis.call('XADD', jobs, '*', 'job', id, 'attempt', attempt)
    -- Read it into this consumer's pending list now: the lease exists before we return.
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
                            'STREAMS', jobs, '>')
    if not read or read[1][2][1][1] ~= entry then
      return redis.error_reply('claim read another entry than it added')
    end
    redis.call('HSET', job, 'state', 'running', 'consumer', consumer, 'entry', entry,
               'started', now)
    for _, name in ipairs({'photo', 'painting', 'painting2'}) do
      local digest = redis.call('HGET', job, name)
      if digest and digest ~= '' then
        redis.call('EXPIRE', prefix .. 'blob:' .. digest, blob_ttl)
      end
    end
    emit(job, maxlen, {'type', 'started', 'job', id, 'attempt', attempt,
                       'consumer', consumer, 't', now})
    return {id, entry, attempt, redis.call('HGETALL', job)}
  end
end
return false
"""
)

# KEYS: jobs, job
# ARGV: consumer, entry, group
# -> {'ok', cancelled by ('' if not asked)} while owned, else {'lost', ''}
RENEW: Final = (
    _PRELUDE
    + """
local jobs, job = KEYS[1], KEYS[2]
local consumer, entry, group = ARGV[1], ARGV[2], ARGV[3]
if not owns(jobs, group, job, consumer, entry) then return {'lost', ''} end
-- JUSTID: resets the idle time without counting a delivery.
redis.call('XCLAIM', jobs, group, consumer, 0, entry, 'JUSTID')
return {'ok', redis.call('HGET', job, 'cancel') or ''}
"""
)

# KEYS: jobs, job, waiting
# ARGV: consumer, entry, group, outcome, now, job ttl, events maxlen, max attempts,
#       wake channel, message when retries run out, then the outcome's fields (name, value)...
# outcome: done | failed | cancelled | retry (the engine died: requeue or fail) |
#          release (the agent stops: back to the queue without counting the delivery)
# -> 'refused' when this consumer no longer owns the entry (a late result), else the new state
FINISH: Final = (
    _PRELUDE
    + """
local jobs, job, waiting = KEYS[1], KEYS[2], KEYS[3]
local consumer, entry, group, outcome, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl, maxlen, wake, message = ARGV[6], ARGV[7], ARGV[9], ARGV[10]
local max_attempts = tonumber(ARGV[8])
if not owns(jobs, group, job, consumer, entry) then return 'refused' end
local fields = {}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XACK', jobs, group, entry)
redis.call('XDEL', jobs, entry)
local id = redis.call('HGET', job, 'id')
local attempt = redis.call('HGET', job, 'attempts')
if outcome == 'retry' then
  local reason = fields[2] or 'engine_crashed'
  return requeue_or_fail(job, id, waiting, wake, max_attempts, ttl, maxlen, now, reason, message)
end
if outcome == 'release' then
  redis.call('HINCRBY', job, 'attempts', -1)
  requeue(job, id, waiting, wake)
  emit(job, maxlen, {'type', 'requeued', 'job', id, 'attempt', attempt, 'reason', 'released',
                     't', now})
  return 'queued'
end
if outcome == 'cancelled' then
  fields = {'by', redis.call('HGET', job, 'cancel') or ''}
end
close(job, id, outcome, ttl, now, fields)
local event = {'type', outcome, 'job', id, 'attempt', attempt, 't', now}
for _, v in ipairs(fields) do event[#event + 1] = v end
emit(job, maxlen, event)
return outcome
"""
)

# KEYS: jobs, waiting
# ARGV: reaper consumer, group, prefix, lease (ms), now, job ttl, events maxlen, max attempts,
#       wake channel, message when retries run out
# -> {requeued, failed, cancelled}
REAP: Final = (
    _PRELUDE
    + """
local jobs, waiting = KEYS[1], KEYS[2]
local reaper, group, prefix, lease, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl, maxlen, wake, message = ARGV[6], ARGV[7], ARGV[9], ARGV[10]
local max_attempts = tonumber(ARGV[8])
local counts = {requeued = 0, failed = 0, cancelled = 0}
local cursor = '0-0'
for _ = 1, 100 do
  local claimed = redis.pcall('XAUTOCLAIM', jobs, group, reaper, lease, cursor, 'COUNT', 100)
  if type(claimed) ~= 'table' or claimed.err then break end
  cursor = claimed[1]
  for _, item in ipairs(claimed[2]) do
    local entry, fields = item[1], item[2]
    redis.call('XACK', jobs, group, entry)
    redis.call('XDEL', jobs, entry)
    if type(fields) == 'table' and fields[1] == 'job' then
      local id = fields[2]
      local job = prefix .. 'job:' .. id
      if redis.call('HGET', job, 'entry') == entry
          and redis.call('HGET', job, 'state') == 'running' then
        local done = requeue_or_fail(job, id, waiting, wake, max_attempts, ttl, maxlen, now,
                                     'host_lost', message)
        counts[done] = counts[done] + 1
      end
    end
  end
  if cursor == '0-0' then break end
end
return {counts.requeued, counts.failed, counts.cancelled}
"""
)

# KEYS: job, waiting
# ARGV: id, by, now, job ttl, cancel channel
# -> 'cancelled' (it was waiting: gone now), 'signalled' (running: the agent stops it),
#    'unknown', or 'already:<state>' when it had finished
CANCEL: Final = (
    _PRELUDE
    + """
local job, waiting = KEYS[1], KEYS[2]
local id, by, now, ttl, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local state = redis.call('HGET', job, 'state')
if not state then return 'unknown' end
if state == 'queued' then
  redis.call('ZREM', waiting, id)
  local chat = redis.call('HGET', job, 'chat_key')
  if chat then redis.call('SREM', chat, id) end
  close(job, id, 'cancelled', ttl, now, {'cancel', by})
  return 'cancelled'
end
if state == 'running' then
  redis.call('HSET', job, 'cancel', by)
  redis.call('PUBLISH', channel, id)
  return 'signalled'
end
return 'already:' .. state
"""
)

# KEYS: instance
# ARGV: token, ttl (ms)
# -> 1 when this token holds the bot's name now (taken or kept), 0 when another process does
HOLD_NAME: Final = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: instance
# ARGV: token
# -> 1 when this token's hold on the bot's name ended, 0 when it did not hold it
DROP_NAME: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
