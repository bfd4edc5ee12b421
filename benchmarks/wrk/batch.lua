-- wrk script: POST BENCH_BATCH_ROWS flowers (default 1000) to /iris/classify_batch.
-- The rows are a fixed pseudo-random spread over the iris ranges, the same on every run.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

local rows = tonumber(os.getenv("BENCH_BATCH_ROWS") or "1000")
local seed = 12345
local function next_value(low, high)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return low + (high - low) * seed / 2147483648
end

local flowers = {}
for i = 1, rows do
  flowers[i] = string.format(
    '{"sepal_length": %.2f, "sepal_width": %.2f, "petal_length": %.2f, "petal_width": %.2f}',
    next_value(4.3, 7.9), next_value(2.0, 4.4), next_value(1.0, 6.9), next_value(0.1, 2.5))
end

wrk.method = "POST"
wrk.path = "/iris/classify_batch"
wrk.headers["Content-Type"] = "application/json"
-- The bearer token of a server started with tokens on, as the harness passes it.
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
wrk.body = '{"flowers": [' .. table.concat(flowers, ", ") .. ']}'

done = report.done
