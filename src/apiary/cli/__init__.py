"""The command line: ``apiary serve``, ``apiary worker``, ``apiary db``."""
