"""The Lua scripts of ``RedisState``: one per decision, run atomically inside Redis.

``ADMIT`` is the twin of ``_state_decide.decide`` + the write of the slot; it reads time
from the server (``TIME``), never from a client. Every key name starts with the hash tag
``{prefix}`` (``T``), so one script may touch any of them on a Redis Cluster (one slot).
Per (project, model) ``S`` (``T:s:<project>|<model>``) and per key fingerprint ``K``
(``T:<fingerprint>``):

- ``S:fly`` sorted set, reservation id -> time, for requests in flight (admitted, not
  settled): they count whatever their time, until the in-flight TTL; the settle moves each
  to ``S:log`` at max(its time, the server's now) (see ``_state_types.span_of``)
- ``S:log`` sorted set, reservation id -> time of settled requests (one entry per request,
  never per token): each counts ``window_s`` after its time
- ``S:tok`` hash, reservation id (in ``S:fly`` or ``S:log``) -> input tokens, and ``#`` ->
  their running sum
- ``S:d:<day>`` requests on Pacific day number ``<day>``; ``S:w:<day>`` the 80% warning flag
- ``S:c`` hash, the rate-limit cooldown ``u`` (until) and ``r`` (reason code)
- ``S:l`` hash, limits learned from the server (``rpm``/``tpm``/``rpd`` -> quotaValue)
- ``K:k`` hash, quarantine ``q`` (reason code), key cooldown ``cu`` / ``cr``
- ``K:f`` sorted set, reservations in flight -> start time
- ``T:gen`` a number that grows whenever a quarantine or cooldown is set or lifted: an
  admit whose caller last saw another value answers with the quarantines and cooldowns of
  all its candidates too (what the outage fallback starts from, ``_state_redis_seen.py``)
- ``T:salt`` the fingerprint salt (on a Cluster the scripts are routed by this key)

Every key gets a TTL (``PEXPIRE``, only ever lengthened by ``pexpire_max``). Numbers go
back to Python as strings (Redis would truncate Lua floats to integers).
"""

COMMON = r"""
local INF = math.huge
local function fmt(x) if x == INF then return 'inf' end return string.format('%.6f', x) end
local function pexpire_max(key, ms)
  ms = math.ceil(ms)
  if ms < 1000 then ms = 1000 end
  local cur = redis.call('PTTL', key)
  if cur == -2 then return end
  if cur < ms then redis.call('PEXPIRE', key, ms) end
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function num(s)
  if s == nil or s == false or s == '' then return nil end
  return tonumber(s)
end
-- T:gen grows (server microseconds, strictly) on every quarantine/cooldown change
local function bump(gk, ttl_ms)
  local t = redis.call('TIME')
  local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local g = tonumber(redis.call('GET', gk) or '0') or 0
  if v <= g then v = g + 1 end
  redis.call('SET', gk, string.format('%.0f', v), 'PX', math.ceil(ttl_ms))
end
local function chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    local part = {}
    for j = i, math.min(i + 999, #items) do part[#part + 1] = items[j] end
    redis.call(cmd, key, unpack(part))
  end
end
local function prune_set(sb, set, horizon)
  local old = redis.call('ZRANGEBYSCORE', sb .. set, '-inf', horizon)
  if #old == 0 then return end
  local total = 0
  for i = 1, #old, 1000 do
    local part = {}
    for j = i, math.min(i + 999, #old) do part[#part + 1] = old[j] end
    local toks = redis.call('HMGET', sb .. ':tok', unpack(part))
    for k = 1, #toks do total = total + (num(toks[k]) or 0) end
  end
  chunked('HDEL', sb .. ':tok', old)
  redis.call('HINCRBY', sb .. ':tok', '#', 0 - total)  -- never -0: HINCRBY refuses it
  redis.call('ZREMRANGEBYSCORE', sb .. set, '-inf', horizon)
end
-- settled requests older than a window; flights never settled (their process died)
local function prune(sb, horizon, lost)
  prune_set(sb, ':log', horizon)
  prune_set(sb, ':fly', lost)
end
-- limits of one candidate: configured (ARGV) lowered by learned (S:l)
local function limits_of(sb, rpm, tpm, rpd, w)
  if w == nil then return nil end
  local lim = {rpm = rpm, tpm = tpm, rpd = rpd, span = w}
  local learned = redis.call('HGETALL', sb .. ':l')
  for i = 1, #learned, 2 do
    local dim, v = learned[i], tonumber(learned[i + 1])
    if lim[dim] ~= nil and v < lim[dim] then lim[dim] = v end
  end
  return lim
end
local function day_count(sb, day) return num(redis.call('GET', sb .. ':d:' .. day)) or 0 end
-- the earliest time the request fits, and whether it is sure (not: a request in flight
-- must free first, a window after its settle, which nobody knows yet: no booking then)
local function ready_at(sb, lim, now, tokens, midnight, day)
  if lim == nil then return now, true end
  local at, sure = now, true
  local ns = redis.call('ZCARD', sb .. ':log')
  local n = ns + redis.call('ZCARD', sb .. ':fly')
  local function frees(i, t)  -- entry i (0-based: settled first, then in flight), time t
    if i < ns then
      at = math.max(at, t + lim.span)
    else
      at = math.max(at, t + lim.span, now + lim.span)
      sure = false
    end
  end
  local function nth(i)
    local e
    if i < ns then e = redis.call('ZRANGE', sb .. ':log', i, i, 'WITHSCORES')
    else e = redis.call('ZRANGE', sb .. ':fly', i - ns, i - ns, 'WITHSCORES') end
    return tonumber(e[2])
  end
  if lim.rpd ~= nil and day_count(sb, day) >= lim.rpd then
    if lim.rpd > 0 then at = math.max(at, midnight) else return INF, true end
  end
  if lim.rpm ~= nil then
    if lim.rpm == 0 then return INF, true end
    local excess = n - lim.rpm
    if excess >= 0 then frees(excess, nth(excess)) end
  end
  if lim.tpm == 0 then return INF, true end
  if lim.tpm ~= nil and n > 0 then
    local need = (num(redis.call('HGET', sb .. ':tok', '#')) or 0) + tokens - lim.tpm
    if need > 0 then
      local all = redis.call('ZRANGE', sb .. ':log', 0, -1, 'WITHSCORES')
      local fly = redis.call('ZRANGE', sb .. ':fly', 0, -1, 'WITHSCORES')
      for i = 1, #fly do all[#all + 1] = fly[i] end
      local freed, found = 0, false
      for i = 1, #all, 2 do
        freed = freed + (num(redis.call('HGET', sb .. ':tok', all[i])) or 0)
        if freed >= need then
          frees((i - 1) / 2, tonumber(all[i + 1]))
          found = true
          break
        end
      end
      if not found then frees(n - 1, tonumber(all[#all])) end
    end
  end
  return at, sure
end
"""

# ARGV: tag, tokens, book_until_s|'', offset, rid, warn_fraction, quarantine_ttl_s,
#       inflight_ttl_s, salt_key|'', salt_ttl_s, known gen, lease (extra slots wanted), then
#       per candidate: fp, sb, rpm, tpm, rpd, w. An admit answers with the ids of the extra
#       slots it took (``_state_lease``). The last item of every reply: {} when T:gen is the
#       known one, else {gen, then per candidate: q, cu, cr, su, sr} (what the caller's
#       fallback starts from). An admit also answers with T:gen, as a settle does: a process's
#       leases end when it sees T:gen move (``_state_lease``)
ADMIT = (
    COMMON
    + r"""
local prefix, tokens, book = ARGV[1], tonumber(ARGV[2]), num(ARGV[3])
local offset, rid, warn_at = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local qttl, fttl = tonumber(ARGV[7]) * 1000, tonumber(ARGV[8])
if ARGV[9] ~= '' then pexpire_max(ARGV[9], tonumber(ARGV[10]) * 1000) end
local now = clock()
local day = math.floor((now + offset) / 86400)
local midnight = (day + 1) * 86400 - offset
local quarantined, reasons, usable = {}, {}, false
local earliest, best, best_at = INF, nil, INF
local function seen()
  local g = redis.call('GET', prefix .. ':gen') or ''
  if g == ARGV[11] then return {} end
  local out = {g}
  for i = 13, #ARGV, 6 do
    local k = redis.call('HMGET', prefix .. ':' .. ARGV[i] .. ':k', 'q', 'cu', 'cr')
    local s = redis.call('HMGET', ARGV[i + 1] .. ':c', 'u', 'r')
    out[#out + 1] = k[1] or ''
    out[#out + 1] = k[2] or ''
    out[#out + 1] = k[3] or ''
    out[#out + 1] = s[1] or ''
    out[#out + 1] = s[2] or ''
  end
  return out
end
for i = 13, #ARGV, 6 do
  local c = {fp = ARGV[i], sb = ARGV[i + 1], idx = (i - 13) / 6}
  c.kb = prefix .. ':' .. c.fp
  local k = redis.call('HMGET', c.kb .. ':k', 'q', 'cu', 'cr')
  if k[1] then
    quarantined[#quarantined + 1] = c.fp
    quarantined[#quarantined + 1] = k[1]
    pexpire_max(c.kb .. ':k', qttl)  -- remembered while the key is still offered
  else
    usable = true
    c.lim = limits_of(c.sb, num(ARGV[i + 2]), num(ARGV[i + 3]), num(ARGV[i + 4]),
                      num(ARGV[i + 5]))
    if c.lim ~= nil then prune(c.sb, now - c.lim.span, now - fttl) end
    local s = redis.call('HMGET', c.sb .. ':c', 'u', 'r')
    local kcu, scu = num(k[2]) or 0, num(s[1]) or 0
    local cooling = math.max(kcu, scu)
    local ready, sure = ready_at(c.sb, c.lim, now, tokens, midnight, day)
    local at = math.max(now, cooling, ready)
    if at <= now then c.at = now; best = c; break end
    if cooling > now then
      local r = (scu >= kcu) and s[2] or k[3]
      if r then reasons[r] = true end
    end
    if at < earliest then earliest = at end
    if c.lim ~= nil and sure and at < best_at then best, best_at = c, at; c.at = at end
  end
end
if best == nil or best.at > now then
  if not usable then
    local out = {'q', fmt(now)}
    for i = 1, #quarantined do out[#out + 1] = quarantined[i] end
    out[#out + 1] = seen()
    return out
  end
  if book == nil or best == nil or best.at == INF or best.at > now + book then
    local rs = {}
    for r, _ in pairs(reasons) do rs[#rs + 1] = r end
    table.sort(rs)
    local reason = table.concat(rs, '; ')
    if reason == '' then reason = 'no project has quota room' end
    return {'w', fmt(earliest), fmt(now), reason, seen()}
  end
end
local c = best
-- a lease: extra slots taken now with this one, at most 1/64 of what each window has left
-- after it (none when that is less than one; see _state_lease)
local extra = 0
if c.lim ~= nil and c.at <= now then
  extra = tonumber(ARGV[12]) or 0
  local n = redis.call('ZCARD', c.sb .. ':log') + redis.call('ZCARD', c.sb .. ':fly') + 1
  local function cap(limit, used, each)
    if limit == nil or each <= 0 then return end
    extra = math.min(extra, math.floor((limit - used) / 64 / each))
  end
  cap(c.lim.rpm, n, 1)
  cap(c.lim.rpd, day_count(c.sb, day) + 1, 1)
  cap(c.lim.tpm, (num(redis.call('HGET', c.sb .. ':tok', '#')) or 0) + tokens, tokens)
  if extra < 0 then extra = 0 end
end
local rids = {rid}
for j = 1, extra do rids[#rids + 1] = rid .. '.' .. j end
for j = 1, #rids do redis.call('ZADD', c.kb .. ':f', now, rids[j]) end
redis.call('ZREMRANGEBYSCORE', c.kb .. ':f', '-inf', now - fttl)
pexpire_max(c.kb .. ':f', fttl * 1000)
local at_day = math.floor((c.at + offset) / 86400)
local warn = ''
if c.lim ~= nil then
  -- long enough for a settle as late as the in-flight TTL to count a window from then
  local span_ms = (c.at - now + fttl + c.lim.span) * 1000 + 1000
  for j = 1, #rids do
    redis.call('ZADD', c.sb .. ':fly', c.at, rids[j])
    redis.call('HSET', c.sb .. ':tok', rids[j], tokens)
  end
  redis.call('HINCRBY', c.sb .. ':tok', '#', tokens * #rids)
  pexpire_max(c.sb .. ':fly', span_ms)
  pexpire_max(c.sb .. ':log', span_ms)
  pexpire_max(c.sb .. ':tok', span_ms)
  local dk = c.sb .. ':d:' .. at_day
  local count = redis.call('INCRBY', dk, #rids)
  local day_ms = ((at_day + 2) * 86400 - offset - now) * 1000
  pexpire_max(dk, day_ms)
  if c.lim.rpd ~= nil and c.lim.rpd > 0 and count / c.lim.rpd >= warn_at then
    if redis.call('SET', c.sb .. ':w:' .. at_day, '1', 'NX', 'PX', math.ceil(day_ms)) then
      warn = tostring(count)
    end
  end
end
table.remove(rids, 1)
return {'a', tostring(c.idx), fmt(c.at), fmt(now), tostring(at_day),
        c.lim ~= nil and '1' or '0', warn, rid, rids,
        redis.call('GET', prefix .. ':gen') or '', seen()}
"""
)

# ARGV: kb, sb, rid|'', counted, cancel, prompt_tokens|'', res_day, cool_scope_s|'',
#       cool_key_s|'', reason, quarantine|'', quarantine_ttl_s, learned_ttl_s, gen key,
#       then pairs dim, value
SETTLE = (
    COMMON
    + r"""
local kb, sb, rid = ARGV[1], ARGV[2], ARGV[3]
local now = clock()
if rid ~= '' then
  redis.call('ZREM', kb .. ':f', rid)
  if ARGV[4] == '1' then
    local old = num(redis.call('HGET', sb .. ':tok', rid))
    if ARGV[5] == '1' then
      if redis.call('ZREM', sb .. ':fly', rid) + redis.call('ZREM', sb .. ':log', rid) == 1 then
        redis.call('HDEL', sb .. ':tok', rid)
        redis.call('HINCRBY', sb .. ':tok', '#', 0 - (old or 0))  -- never -0
        local dk = sb .. ':d:' .. ARGV[7]
        if (num(redis.call('GET', dk)) or 0) > 0 then redis.call('DECR', dk) end
      end
    else
      -- the flight ends: the request reached the server by now, so it counts a window
      -- from now (or from its slot, if later); S:log lives as long as S:tok
      local t = num(redis.call('ZSCORE', sb .. ':fly', rid))
      if t ~= nil then
        redis.call('ZREM', sb .. ':fly', rid)
        redis.call('ZADD', sb .. ':log', math.max(t, now), rid)
        local ttl = redis.call('PTTL', sb .. ':tok')
        if ttl > 0 then pexpire_max(sb .. ':log', ttl) end
      end
      if ARGV[6] ~= '' and old ~= nil then
        local new = tonumber(ARGV[6])
        redis.call('HSET', sb .. ':tok', rid, new)
        redis.call('HINCRBY', sb .. ':tok', '#', new - old)
      end
    end
  end
end
local reason = ARGV[10]
local cs = num(ARGV[8])
if cs ~= nil then
  local untl = now + cs
  if untl > (num(redis.call('HGET', sb .. ':c', 'u')) or 0) then
    redis.call('HSET', sb .. ':c', 'u', fmt(untl), 'r', reason)
  end
  pexpire_max(sb .. ':c', cs * 1000 + 1000)
end
local ks = num(ARGV[9])
if ks ~= nil then
  local untl = now + ks
  if untl > (num(redis.call('HGET', kb .. ':k', 'cu')) or 0) then
    redis.call('HSET', kb .. ':k', 'cu', fmt(untl), 'cr', reason)
  end
  pexpire_max(kb .. ':k', ks * 1000 + 1000)
end
if ARGV[11] ~= '' then
  redis.call('HSET', kb .. ':k', 'q', ARGV[11])
  pexpire_max(kb .. ':k', tonumber(ARGV[12]) * 1000)
end
if cs ~= nil or ks ~= nil or ARGV[11] ~= '' then bump(ARGV[14], tonumber(ARGV[12]) * 1000) end
for i = 15, #ARGV, 2 do
  local cur = num(redis.call('HGET', sb .. ':l', ARGV[i]))
  local v = tonumber(ARGV[i + 1])
  if cur == nil or v < cur then redis.call('HSET', sb .. ':l', ARGV[i], v) end
  pexpire_max(sb .. ':l', tonumber(ARGV[13]) * 1000)
end
return redis.call('GET', ARGV[14]) or ''  -- T:gen: leases admitted before a change end
"""
)

# ARGV: tag, offset, inflight_ttl_s, then per candidate: fp, sb, rpm, tpm, rpd, w
SNAPSHOT = (
    COMMON
    + r"""
local prefix, offset, fttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = clock()
local day = math.floor((now + offset) / 86400)
local out = {fmt(now)}
for i = 4, #ARGV, 6 do
  local fp, sb = ARGV[i], ARGV[i + 1]
  local kb = prefix .. ':' .. fp
  local k = redis.call('HMGET', kb .. ':k', 'q', 'cu', 'cr')
  local flying = redis.call('ZCOUNT', kb .. ':f', now - fttl, '+inf')
  local lim = limits_of(sb, num(ARGV[i + 2]), num(ARGV[i + 3]), num(ARGV[i + 4]),
                        num(ARGV[i + 5]))
  if lim ~= nil then prune(sb, now - lim.span, now - fttl) end
  local s = redis.call('HMGET', sb .. ':c', 'u', 'r')
  local learned = redis.call('HGETALL', sb .. ':l')
  out[#out + 1] = {k[1] or '', k[2] or '0', k[3] or '', tostring(flying),
                   s[1] or '0', s[2] or '',
                   tostring(redis.call('ZCARD', sb .. ':log') + redis.call('ZCARD', sb .. ':fly')),
                   redis.call('HGET', sb .. ':tok', '#') or '0',
                   tostring(day_count(sb, day)), learned}
end
return out
"""
)

# ARGV: kb, sb, gen key, gen ttl (s): lift a key's quarantine and cooldowns and its scope's
# cooldown (``RedisState.reset``), and say so to every process's next admit
RESET = (
    COMMON
    + r"""
redis.call('DEL', ARGV[1] .. ':k', ARGV[2] .. ':c')
bump(ARGV[3], tonumber(ARGV[4]) * 1000)
return 1
"""
)
