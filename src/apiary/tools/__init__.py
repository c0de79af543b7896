"""Tools the agents call: the protocol, built-ins and workspace tools."""
