"""detect.evaluation"""
