Feature: f
  Scenario: nothing happens
