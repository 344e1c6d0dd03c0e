"""The last step of the flow: publishing outputs and dead letters, and waiting for acks."""
