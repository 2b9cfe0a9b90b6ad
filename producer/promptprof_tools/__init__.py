"""promptprof's developer tools: the ``promptprof`` command line, the local stack (Tansu and
influxd), the demo and the traffic simulator. The library a service embeds (:mod:`promptprof`)
never imports this package."""
