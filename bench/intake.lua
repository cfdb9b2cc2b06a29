-- wrk script: POST /api/v1/leads with a unique external id and phone per request, and count a
-- lead as placed only when the answer is 201 and carries an assignee_id (not null).
-- Environment: ALLOT_TOKEN (bearer token), ALLOT_TAG (unique per run).
local token = os.getenv("ALLOT_TOKEN")
local tag = os.getenv("ALLOT_TAG") or "run"
local counter = 0
thread_id = 0  -- a global: setup() sets it per thread
local threads = {}
placed, refused = 0, 0  -- globals: done() reads them per thread

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  counter = counter + 1
  local n = thread_id * 10000000 + counter
  local body = string.format(
    '{"source":"bench","external_id":"%s-%d","customer":{"name":"Клиент %d","phone":"+79%09d"},"priority":%d}',
    tag, n, n, n % 1000000000, n % 3)
  return wrk.format(nil, "/api/v1/leads", nil, body)
end

function response(status, headers, body)
  if status == 201 and string.find(body, '"assignee_id":"', 1, true) then
    placed = placed + 1
  else
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local total_placed, total_refused = 0, 0
  for _, thread in ipairs(threads) do
    total_placed = total_placed + thread:get("placed")
    total_refused = total_refused + thread:get("refused")
  end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT placed=%d refused=%d seconds=%.2f placed_per_s=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d\n",
    total_placed, total_refused, seconds, total_placed / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
