"""netlab.topology"""
