"""`detect demo` (placeholder until its issue lands: replaced by the real command)."""


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("detect demo is not implemented yet")
