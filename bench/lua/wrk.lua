-- wrk script for the influx-gateway benchmark (bench/run.py drives it; LuaJIT, wrk 4.x).
--
-- Arguments after `--`, as key=value:
--   mode=write     POST a payload file from bench/payload.py
--     body=FILE      the file: batch.lp[.gz] (static), or body.lp[.gz] with unique=1
--     gzip=1         the file is gzip: send `Content-Encoding: gzip`
--     token=T        sent as `Authorization: Token T`
--     unique=1       prepend a marker line with a unique id to every request, so the sink can
--                    tell duplicates from loss (costs the load generator a copy per request);
--                    with gzip=1 the marker is a stored (uncompressed) gzip member in front,
--                    which makes the body a valid multi-member gzip stream
--       ts=NS          the marker line's timestamp
--       tid_base=N     first thread number (marker ids are (tid_base + thread) * 2^20 + n)
--     interval_ms=N  pause between requests on a connection (the half-load phase)
--   mode=get       GET the URL (a health path)
--     interval_ms=N  pause between requests on a connection (0: as fast as possible)
-- Every mode records responses per HTTP status and prints one line at the end:
--   WRK_JSON {"duration_us":..,"requests":..,"statuses":{"204":..},"errors":{..},"latency_us":{..}}

local bit = require("bit")

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

local function parse_args(args)
   local out = {}
   for _, arg in ipairs(args) do
      local key, value = arg:match("^([%w_]+)=(.*)$")
      if key then out[key] = value end
   end
   return out
end

-- CRC-32 (IEEE), for the trailer of the stored gzip member.
local crc_table = {}
for i = 0, 255 do
   local c = i
   for _ = 1, 8 do
      if bit.band(c, 1) == 1 then
         c = bit.bxor(0xEDB88320, bit.rshift(c, 1))
      else
         c = bit.rshift(c, 1)
      end
   end
   crc_table[i] = c
end

local function crc32(s)
   local c = bit.bnot(0)
   for i = 1, #s do
      c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
   end
   return bit.bnot(c)
end

local function le32(n)
   return string.char(bit.band(n, 0xFF), bit.band(bit.rshift(n, 8), 0xFF),
                      bit.band(bit.rshift(n, 16), 0xFF), bit.band(bit.rshift(n, 24), 0xFF))
end

-- One gzip member holding `s` in a single stored deflate block (s shorter than 64 KiB).
local function gzip_stored(s)
   local n = #s
   return "\31\139\8\0\0\0\0\0\0\255" .. "\1"
      .. string.char(n % 256, math.floor(n / 256), 255 - n % 256, 255 - math.floor(n / 256))
      .. s .. le32(crc32(s)) .. le32(n)
end

local opts, body, head, counter, base_id, interval
statuses = {}

-- wrk decides after init() whether the script is static (no global `request`: the request is
-- built once per thread and sent as is) and whether it has a `delay`; init() sets both.
local function unique_request()
   counter = counter + 1
   -- ids beyond a thread's 2^20 range are still counted by the sink, just not deduplicated
   local id = counter < 1048576 and (base_id + counter) or (2 ^ 40 + base_id * 1048576 + counter)
   local marker = string.format("bench_batch id=%.0fi %s\n", id, opts.ts)
   if opts.gzip == "1" then marker = gzip_stored(marker) end
   -- a single concatenation per request: every copy of a 1.5 MB body costs the load generator
   return head .. (#marker + #body) .. "\r\n\r\n" .. marker .. body
end

local function fixed_delay()
   return interval
end

function init(args)
   opts = parse_args(args)
   counter = 0
   request = nil
   delay = nil
   if opts.mode == "write" then
      local f = assert(io.open(opts.body, "rb"))
      body = f:read("*a")
      f:close()
      wrk.method = "POST"
      wrk.headers["Authorization"] = "Token " .. (opts.token or "none")
      wrk.headers["Content-Type"] = "text/plain; charset=utf-8"
      wrk.headers["User-Agent"] = "Telegraf/1.30 (bench/lua/wrk.lua)"
      if opts.gzip == "1" then wrk.headers["Content-Encoding"] = "gzip" end
      if opts.unique == "1" then
         -- the head without Content-Length, built once
         local lines = { "POST " .. wrk.path .. " HTTP/1.1" }
         for name, value in pairs(wrk.headers) do lines[#lines + 1] = name .. ": " .. value end
         head = table.concat(lines, "\r\n") .. "\r\nContent-Length: "
         base_id = (tonumber(opts.tid_base or "0") + tid) * 1048576
         request = unique_request
      else
         wrk.body = body  -- the whole batch, sent unchanged by every request
      end
      interval = tonumber(opts.interval_ms or "0")
      if interval > 0 then delay = fixed_delay end
   else
      wrk.method = "GET"
      interval = tonumber(opts.interval_ms or "0")
      if interval > 0 then delay = fixed_delay end
   end
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

local function json(value)
   local t = type(value)
   if t == "table" then
      local parts = {}
      for k, v in pairs(value) do
         parts[#parts + 1] = string.format("%q:%s", tostring(k), json(v))
      end
      return "{" .. table.concat(parts, ",") .. "}"
   elseif t == "number" then
      if value ~= value or value == math.huge or value == -math.huge then return "null" end
      return string.format("%.17g", value)
   elseif t == "string" then
      return string.format("%q", value)
   end
   return "null"
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      local per_thread = thread:get("statuses") or {}
      for code, n in pairs(per_thread) do
         total[code] = (total[code] or 0) + n
      end
   end
   local lat = {
      min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
      p50 = latency:percentile(50), p90 = latency:percentile(90),
      p99 = latency:percentile(99), p999 = latency:percentile(99.9),
   }
   io.write("WRK_JSON ", json({
      duration_us = summary.duration, requests = summary.requests, bytes = summary.bytes,
      errors = summary.errors, statuses = total, latency_us = lat, threads = #threads,
   }), "\n")
end
