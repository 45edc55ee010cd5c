"""The appliance's web page and HTTP API (``oncolens serve``) and its live MJPEG stream.

Modules, one job each: ``upload`` (reading and checking an uploaded image), ``queue`` (a
bounded queue and one worker in front of the model), ``metrics`` (Prometheus text),
``audit`` (JSON-lines audit log), ``auth`` (loopback and token checks), ``server`` (a
threaded WSGI server from the standard library), ``app`` (the routes), ``live`` (the
``LiveSink`` for ``oncolens classify ... --serve``) and ``bench`` (requests/s and p99).

The framework (Bottle) is imported only when an app is built, so nothing here costs
anything to a host that never serves.
"""
