"""Client-facing gRPC in worker processes beside the member that owns Raft and MVCC.

With ``plasma chainfire serve --frontends N`` the member does not listen on its client
port itself. N worker processes do (``SO_REUSEPORT``: the kernel spreads connections
over them); each terminates TLS and HTTP/2, and relays every call's raw request bytes,
caller identity and metadata over one Unix socket to the member (:mod:`.worker`;
frames in :mod:`.protocol`, both ends' framing in :mod:`.link`), which runs the same
servicers as in-process gRPC (:mod:`.dispatch`) and relays the answers back. The
design, and what it costs and saves, is in docs/adr/003's "Fourth round".
"""
