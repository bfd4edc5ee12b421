-- wrk script: POST one flower (BENCH_FLOWER) to /iris/classify_iris on every request.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

wrk.method = "POST"
wrk.path = "/iris/classify_iris"
wrk.headers["Content-Type"] = "application/json"
-- The bearer token of a server started with tokens on, as the harness passes it.
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
-- The API's sample flower, as benchmarks/loadgen.py passes it.
wrk.body = assert(os.getenv("BENCH_FLOWER"), "BENCH_FLOWER is not set")

done = report.done
