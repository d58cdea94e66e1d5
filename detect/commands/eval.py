"""`detect eval` (placeholder until its issue lands: replaced by the real command)."""


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("detect eval is not implemented yet")
