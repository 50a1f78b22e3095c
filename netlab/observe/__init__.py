"""netlab.observe"""
