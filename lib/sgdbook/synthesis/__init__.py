"""The cross-paper synthesis: one network and one data set seen through the four papers' lenses."""
