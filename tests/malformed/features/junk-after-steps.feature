Feature: f
  Scenario: s
    Given the embedded lab is up
    and then something happens
