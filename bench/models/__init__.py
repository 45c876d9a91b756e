"""Encoders: the architectures every task of a suite shares."""
