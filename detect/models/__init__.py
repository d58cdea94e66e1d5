"""detect.models"""
