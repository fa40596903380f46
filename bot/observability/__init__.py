"""What the bot tells its operator about itself: Prometheus metrics and structured logs.

Imports nothing from the rest of the bot and nothing from Discord, so the core, the job system and the
wiring can all use it. The Discord-facing hooks (gateway latency, the rate-limit log handler's attachment)
live in ``bot/client.py``.
"""
