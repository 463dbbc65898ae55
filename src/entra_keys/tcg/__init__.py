"""What the TCG specifications define: wire structures, records, event logs; no keys, no
tpm2-pytss."""
