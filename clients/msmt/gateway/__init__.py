"""The agency gateway: follows the inbox, stores what it verified and decrypted, and serves
the STIX it received over TAXII 2.1 (see docs/gateway.md). Needs `pip install ./clients[gateway]`."""
