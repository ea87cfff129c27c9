"""The refund policy, run in the sandbox (no network, 256 MB, 5 s of CPU): reads order.json, prints
the refund as JSON. A script rather than a prompt: money is decided by rules a reviewer can read."""

import json

with open("order.json", encoding="utf-8") as f:
    order = json.load(f)

if order["status"] != "delivered" or order["days_since_delivery"] > 30:
    refund, rule = 0.0, "outside the 30-day window"
elif order["damaged_on_arrival"]:
    refund, rule = order["total_eur"], "kb-12: damaged on arrival, refunded in full"
else:
    refund, rule = round(order["total_eur"] * 0.8, 2), "kb-31: returned unused, 80%"

print(json.dumps({"refund_eur": refund, "rule": rule}))
