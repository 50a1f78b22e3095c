"""netlab.plan"""
