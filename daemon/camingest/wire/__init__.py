"""Everything that crosses a process boundary, one module per socket family.

- pixels: pixel formats and the plane layout of a frame (shared by capture, ring and worker)
- ingest: the capture <-> worker messages (HELLO, WELCOME, REFUSE, FRAME, RELEASE)
- ring: the shared-memory ring of frame slots and its segment names
- output: the header of every published packet (daemon -> subscribers)
- fanin: worker -> main process packets, health and fatal notices; main -> worker commands
- control: control-socket reply codes
- annexb: H.264/H.265 Annex-B parsing of encoded packets

docs/protocol.md documents these byte for byte; tests/unit/wire/test_protocol_doc.py checks that
the struct sizes printed there match. All integers are little-endian. This package imports
nothing else of camingest, so a capture or subscriber needs only it.
"""
