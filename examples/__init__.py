"""Models written the way a user writes them (plain PyTorch), plugged into analysis_utils.

``conv_gru``: a two-layer convolutional GRU registered through ``plugins.register_model``; run
any chapter for it with ``-p plugins examples.conv_gru -p models conv_gru,bl``.
"""
