"""Built-in experiment configs (``get_config(arg)`` files, big_vision style)."""
