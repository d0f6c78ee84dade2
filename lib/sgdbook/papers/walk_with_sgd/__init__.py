"""walk-with-sgd: A Walk with SGD (Xing, Arpit, Tsirigotis, Bengio; arXiv 1802.08770)."""
