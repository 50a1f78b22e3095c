"""netlab.labs"""
