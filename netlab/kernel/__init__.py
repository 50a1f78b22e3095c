"""netlab.kernel"""
