-- The wrk side of the bench: POST one form body per request, taken in order from a file.
-- Arguments (after `--`): the body file, the number of wrk threads, the number of lines to
-- skip (where an earlier part of the same load stopped).
-- Thread i sends lines S+i, S+i+T, S+i+2T, ... (wrapping), so with T threads no body is sent
-- twice before every one was sent once. done() prints one JSON line for bench/wrkrun.py.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local bodies = {}
local count = 0
local index = 0
local step = 1

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    count = count + 1
    bodies[count] = line
  end
  file:close()
  step = tonumber(args[2])
  index = id + tonumber(args[3])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  local body = bodies[index % count + 1]
  index = index + step
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    table.insert(parts, string.format('"p%s":%d', tostring(p):gsub("%.0$", ""), latency:percentile(p)))
  end
  table.insert(parts, string.format('"max":%d', latency.max))
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d,"latency_us":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ",")))
end
