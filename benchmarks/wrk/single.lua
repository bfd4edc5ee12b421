-- wrk script: POST one flower to /iris/classify_iris on every request.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

wrk.method = "POST"
wrk.path = "/iris/classify_iris"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'

done = report.done
