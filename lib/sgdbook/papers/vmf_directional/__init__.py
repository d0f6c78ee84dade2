"""vmf-directional: Directional Analysis of SGD via von Mises-Fisher Distributions in Deep Learning."""
