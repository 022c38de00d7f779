"""`midmix experiment`: the midtraining study's design run end to end on a grid of mixes, start
points and SFT targets, with cached stages and the paper's tables as output."""
